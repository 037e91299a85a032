"""The simulated API server, driven through the official kubernetes client."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from kubernetes import client, config, watch

from monitor.testbed import pki
from monitor.testbed.apiserver import KubeSim

MASTER = "node-role.kubernetes.io/master"


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[KubeSim]:
    with KubeSim(directory=tmp_path / "sim", bookmark_interval=0.3) as server:
        yield server


def core(kubeconfig: Path) -> client.CoreV1Api:
    return client.CoreV1Api(config.new_client_from_config(str(kubeconfig)))


def names(node_list: Any) -> list[str]:
    return sorted(n.metadata.name for n in node_list.items)


def test_list_filters_nodes_by_every_supported_selector_form(sim: KubeSim, tmp_path: Path) -> None:
    sim.add_node("m0", labels={MASTER: "", "zone": "a"})
    sim.add_node("m1", labels={MASTER: "", "zone": "b"})
    sim.add_node("w0", labels={"zone": "a"})
    api = core(sim.write_kubeconfig(tmp_path / "kc"))
    assert names(api.list_node()) == ["m0", "m1", "w0"]
    assert names(api.list_node(label_selector=f"{MASTER}=")) == ["m0", "m1"]
    assert names(api.list_node(label_selector=MASTER)) == ["m0", "m1"]
    assert names(api.list_node(label_selector=f"!{MASTER}")) == ["w0"]
    assert names(api.list_node(label_selector="zone=a")) == ["m0", "w0"]
    assert names(api.list_node(label_selector=f"{MASTER},zone=a")) == ["m0"]
    assert names(api.list_node(label_selector="zone!=a")) == ["m1"]
    listed = api.list_node()
    assert int(listed.metadata.resource_version) == sim.resource_version


def test_list_pages_with_limit_and_continue(sim: KubeSim, tmp_path: Path) -> None:
    for i in range(5):
        sim.add_node(f"n{i}")
    api = core(sim.write_kubeconfig(tmp_path / "kc"))
    first = api.list_node(limit=2)
    assert names(first) == ["n0", "n1"] and first.metadata._continue
    second = api.list_node(limit=2, _continue=first.metadata._continue)
    third = api.list_node(limit=2, _continue=second.metadata._continue)
    assert names(second) == ["n2", "n3"] and names(third) == ["n4"] and not third.metadata._continue


def test_a_watch_streams_only_events_after_the_resource_version_and_honours_the_selector(
    sim: KubeSim, tmp_path: Path
) -> None:
    sim.add_node("m0", labels={MASTER: ""})
    api = core(sim.write_kubeconfig(tmp_path / "kc"))
    rv = api.list_node(label_selector=f"{MASTER}=").metadata.resource_version
    sim.add_node("m1", labels={MASTER: ""})
    sim.add_node("w0")  # never matches: must not be sent
    sim.update_node("m0", labels={})  # leaves the selection: sent as DELETED
    sim.update_node("m1", labels={MASTER: ""}, addresses=[("InternalIP", "192.0.2.1")])
    sim.delete_node("m1")
    seen = [
        (e["type"], e["object"].metadata.name)
        for e in watch.Watch().stream(
            api.list_node, label_selector=f"{MASTER}=", resource_version=rv, timeout_seconds=1
        )
    ]
    assert seen == [("ADDED", "m1"), ("DELETED", "m0"), ("MODIFIED", "m1"), ("DELETED", "m1")]


def test_a_watch_without_resource_version_starts_with_the_current_objects(
    sim: KubeSim, tmp_path: Path
) -> None:
    sim.add_node("m0", labels={MASTER: ""})
    api = core(sim.write_kubeconfig(tmp_path / "kc"))
    seen = [
        (e["type"], e["object"].metadata.name) for e in watch.Watch().stream(api.list_node, timeout_seconds=1)
    ]
    assert seen == [("ADDED", "m0")]


def test_a_watch_sends_bookmarks_at_the_current_resource_version_and_closes_at_its_timeout(
    sim: KubeSim, tmp_path: Path
) -> None:
    api = core(sim.write_kubeconfig(tmp_path / "kc"))
    rv = api.list_node().metadata.resource_version
    sim.add_node("w0")  # filtered out, but the bookmark still moves past it
    started = time.monotonic()
    resp = api.list_node(
        watch=True,
        resource_version=rv,
        allow_watch_bookmarks=True,
        timeout_seconds=1,
        label_selector=MASTER,
        _preload_content=False,
    )
    lines = [line for line in resp.read().decode().splitlines() if line]
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 3
    bookmarks = [line for line in lines if '"BOOKMARK"' in line]
    assert bookmarks and all(f'"resourceVersion": "{sim.resource_version}"' in b for b in bookmarks)
    assert not [line for line in lines if '"BOOKMARK"' not in line]


def test_a_compacted_resource_version_gives_410_on_list_and_an_expired_error_event_on_watch(
    sim: KubeSim, tmp_path: Path
) -> None:
    sim.add_node("m0")
    api = core(sim.write_kubeconfig(tmp_path / "kc"))
    old_rv = api.list_node().metadata.resource_version
    sim.compact()
    with pytest.raises(client.ApiException) as err:
        api.list_node(resource_version=old_rv)
    assert err.value.status == 410
    resp = api.list_node(watch=True, resource_version=old_rv, timeout_seconds=5, _preload_content=False)
    body = resp.read().decode()
    assert '"type": "ERROR"' in body and '"code": 410' in body and '"Expired"' in body
    fresh_rv = api.list_node().metadata.resource_version
    assert int(fresh_rv) > int(old_rv)
    seen = list(watch.Watch().stream(api.list_node, resource_version=fresh_rv, timeout_seconds=1))
    assert seen == []


def test_client_certificates_and_tokens_both_authenticate_and_the_user_is_recorded(
    sim: KubeSim, tmp_path: Path
) -> None:
    cert_api = core(sim.write_kubeconfig(tmp_path / "cert", user="system:node:m0"))
    token_api = core(sim.write_kubeconfig(tmp_path / "token", user="robot", token="s3cret"))
    embedded_api = core(sim.write_kubeconfig(tmp_path / "embedded", user="flat", embed=True))
    cert_api.list_node()
    token_api.list_node()
    embedded_api.list_node()
    users = [r.user for r in sim.request_log() if r.kind == "list"]
    assert users == ["system:node:m0", "robot", "flat"]
    assert sim.request_count("list") == 3


def test_requests_without_valid_credentials_get_401(sim: KubeSim, tmp_path: Path) -> None:
    pki.write_kubeconfig(tmp_path / "none", server=sim.url, ca_cert=sim.ca.cert)
    pki.write_kubeconfig(tmp_path / "bad", server=sim.url, ca_cert=sim.ca.cert, token="wrong")
    for name in ("none", "bad"):
        with pytest.raises(client.ApiException) as err:
            core(tmp_path / name).list_node()
        assert err.value.status == 401
    assert sim.request_count("rejected") == 2


def test_health_endpoints_answer_without_credentials_as_kube_apiserver_does(sim: KubeSim) -> None:
    # HAProxy's `option httpchk GET /readyz` sends no client certificate; a real API server answers it.
    pool = urllib3.PoolManager(ca_certs=str(sim.ca.cert))
    for path in ("/readyz", "/healthz", "/livez"):
        assert pool.request("GET", sim.url + path).status == 200
    assert pool.request("GET", sim.url + "/api/v1/nodes").status == 401


def test_expired_and_foreign_client_certificates_fail_the_tls_handshake(sim: KubeSim, tmp_path: Path) -> None:
    expired = sim.client_cert(user="old", expired=True)
    other_ca = pki.make_ca(tmp_path / "other", name="other-ca")
    foreign = pki.make_client_cert(other_ca, tmp_path / "other", user="stranger")
    for label, pair in (("expired", expired), ("foreign", foreign)):
        kubeconfig = pki.write_kubeconfig(tmp_path / label, server=sim.url, ca_cert=sim.ca.cert, client=pair)
        with pytest.raises((client.ApiException, urllib3.exceptions.HTTPError)):
            core(kubeconfig).list_node(_request_timeout=5)
    errors = " ".join(sim.tls_errors()).lower()
    assert "certificate has expired" in errors and "unable to get local issuer" in errors
    assert not [r for r in sim.request_log() if r.user in ("old", "stranger")]


def test_the_kubernetes_endpointslice_follows_the_lease_holders(sim: KubeSim, tmp_path: Path) -> None:
    sim.set_endpoint_addresses(["192.0.2.1", "192.0.2.2"])
    api = client.DiscoveryV1Api(config.new_client_from_config(str(sim.write_kubeconfig(tmp_path / "kc"))))
    listed = api.list_namespaced_endpoint_slice(
        "default", label_selector="kubernetes.io/service-name=kubernetes"
    )
    assert [e.addresses for e in listed.items[0].endpoints] == [["192.0.2.1"], ["192.0.2.2"]]
    assert api.read_namespaced_endpoint_slice("kubernetes", "default").address_type == "IPv4"
    assert api.list_namespaced_endpoint_slice("other").items == []
    sim.set_endpoint_addresses(["192.0.2.2"])
    events = list(
        watch.Watch().stream(
            api.list_namespaced_endpoint_slice,
            "default",
            resource_version=listed.metadata.resource_version,
            timeout_seconds=1,
        )
    )
    assert [(e["type"], [x.addresses for x in e["object"].endpoints]) for e in events] == [
        ("MODIFIED", [["192.0.2.2"]])
    ]


def test_injected_faults_break_requests_the_way_a_failing_server_does(sim: KubeSim, tmp_path: Path) -> None:
    api = core(sim.write_kubeconfig(tmp_path / "kc"))
    api.list_node()
    sim.status500()
    with pytest.raises(client.ApiException) as err:
        api.list_node()
    assert err.value.status == 500
    sim.refuse()
    with pytest.raises((urllib3.exceptions.HTTPError, client.ApiException)):
        api.list_node(_request_timeout=2)
    sim.hang()
    started = time.monotonic()
    with pytest.raises(urllib3.exceptions.HTTPError):
        api.list_node(_request_timeout=0.5)
    assert time.monotonic() - started < 5
    sim.clear_faults()
    assert api.list_node().items == []


def test_cut_streams_ends_open_watches_abruptly(sim: KubeSim, tmp_path: Path) -> None:
    api = core(sim.write_kubeconfig(tmp_path / "kc"))
    outcome: list[str] = []

    def consume() -> None:
        try:
            for _ in watch.Watch().stream(api.list_node, timeout_seconds=30):
                pass
            outcome.append("clean end")
        except Exception as exc:
            outcome.append(type(exc).__name__)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while sim.open_streams() == 0:
        assert time.monotonic() < deadline, "the watch never opened"
        time.sleep(0.01)
    assert sim.cut_streams() == 1
    thread.join(5)
    assert outcome and outcome != ["clean end"]


def test_the_watch_faults_expire_every_watch_or_end_it_at_once(sim: KubeSim, tmp_path: Path) -> None:
    sim.add_node("m0")
    api = core(sim.write_kubeconfig(tmp_path / "kc"))
    rv = api.list_node().metadata.resource_version
    sim.expire_watches()
    resp = api.list_node(watch=True, resource_version=rv, timeout_seconds=30, _preload_content=False)
    body = resp.read().decode()
    assert '"type": "ERROR"' in body and '"code": 410' in body
    assert int(api.list_node().metadata.resource_version) >= int(rv), "lists still work"
    sim.end_watches()
    started = time.monotonic()
    resp = api.list_node(watch=True, resource_version=rv, timeout_seconds=30, _preload_content=False)
    assert resp.status == 200 and resp.read() == b""
    assert time.monotonic() - started < 5


def test_the_throttle_fault_answers_429_with_retry_after_and_is_counted(sim: KubeSim, tmp_path: Path) -> None:
    api = core(sim.write_kubeconfig(tmp_path / "kc"))
    sim.throttle(retry_after=0)  # the official client itself retries a few times after a Retry-After
    with pytest.raises(client.ApiException) as err:
        api.list_node()
    assert err.value.status == 429 and err.value.headers["Retry-After"] == "0"
    assert sim.request_count("list") >= 1 and sim.request_log()[-1].at > 0


def test_garbled_lists_and_events_carry_what_their_case_names(sim: KubeSim, tmp_path: Path) -> None:
    sim.add_node("m0")
    api = core(sim.write_kubeconfig(tmp_path / "kc"))
    rv = api.list_node().metadata.resource_version
    sim.garble(lists="no items", events="status not an object")
    resp = api.list_node(_preload_content=False)
    assert "items" not in json.loads(resp.read())
    sim.update_node("m0", labels={"changed": "yes"})
    resp = api.list_node(watch=True, resource_version=rv, timeout_seconds=1, _preload_content=False)
    (event,) = [json.loads(line) for line in resp.read().splitlines() if b'"BOOKMARK"' not in line]
    assert event["type"] == "MODIFIED" and event["object"]["status"] == "Ready"
    sim.clear_faults()
    assert names(api.list_node()) == ["m0"]


def test_the_trickle_fault_sends_a_list_body_byte_by_byte(sim: KubeSim, tmp_path: Path) -> None:
    api = core(sim.write_kubeconfig(tmp_path / "kc"))
    sim.trickle()
    resp = api.list_node(_preload_content=False)
    first = resp.read1(1024)
    assert len(first) <= 2, "more than a byte or two arrived at once"
    sim.clear_faults()
    assert json.loads(first + resp.read())["kind"] == "NodeList"


def test_the_refuse_fault_counts_the_connections_it_resets(sim: KubeSim, tmp_path: Path) -> None:
    api = core(sim.write_kubeconfig(tmp_path / "kc"))
    sim.refuse()
    with pytest.raises((urllib3.exceptions.HTTPError, client.ApiException)):
        api.list_node(_request_timeout=2)
    assert sim.request_count("refused") >= 1


def test_end_streams_ends_open_watches_as_their_timeout_would(sim: KubeSim, tmp_path: Path) -> None:
    api = core(sim.write_kubeconfig(tmp_path / "kc"))
    outcome: list[str] = []

    def consume() -> None:
        try:
            for _ in watch.Watch().stream(api.list_node, timeout_seconds=30):
                pass
            outcome.append("clean end")
        except Exception as exc:
            outcome.append(type(exc).__name__)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while sim.open_streams() == 0:
        assert time.monotonic() < deadline, "the watch never opened"
        time.sleep(0.01)
    started = time.monotonic()
    assert sim.end_streams() == 1
    thread.join(5)
    assert outcome == ["clean end"]
    assert time.monotonic() - started < 5, "long before the 30 s timeout"
