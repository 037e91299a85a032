"""The Kubernetes adapter against the simulated API server, through the official client's TLS and HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.adapters.kube import KubeWatcher
from monitor.testbed import pki
from monitor.testbed.apiserver import KubeSim
from tests.conftest_kube import MASTER, Recorder, add_master, running_watcher, snapshot_names


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[KubeSim]:
    with KubeSim(directory=tmp_path / "primary", bookmark_interval=0.3) as server:
        yield server


@pytest.fixture
def fallback(tmp_path: Path, sim: KubeSim) -> Iterator[KubeSim]:
    """A second API server trusted through the same CA, like localhost:6443 on a control-plane host."""
    with KubeSim(directory=tmp_path / "fallback", ca=sim.ca, bookmark_interval=0.3) as server:
        add_master(server, "seen-through-fallback")
        yield server


def test_the_first_snapshot_holds_the_selected_nodes_and_the_api_is_reported_reachable(
    sim: KubeSim, tmp_path: Path
) -> None:
    add_master(sim, "m0")
    sim.add_node("w0", labels={"node-role.kubernetes.io/worker": ""})
    rec = Recorder()
    with running_watcher(kubeconfig=sim.write_kubeconfig(tmp_path / "kc"), recorder=rec):
        snap = rec.wait_names({"m0"})
        assert snap.server == sim.url and not snap.fallback
        assert snap.items[0]["status"]["addresses"] == [{"type": "InternalIP", "address": "192.0.2.10"}]
        status = rec.wait_status(lambda s: s.reachable)
        assert status.server == sim.url and status.error is None and not status.fallback


def test_added_modified_and_deleted_nodes_reach_emit_within_a_second(sim: KubeSim, tmp_path: Path) -> None:
    add_master(sim, "m0")
    rec = Recorder()
    with running_watcher(kubeconfig=sim.write_kubeconfig(tmp_path / "kc"), recorder=rec):
        rec.wait_names({"m0"})
        add_master(sim, "m1", "192.0.2.11")
        rec.wait_names({"m0", "m1"}, timeout=1.0)
        sim.update_node("m1", labels={MASTER: ""}, addresses=[("InternalIP", "192.0.2.99")])
        rec.wait_for(
            lambda r: r.snapshots()[-1].items[1]["status"]["addresses"][0]["address"] == "192.0.2.99",
            timeout=1.0,
            what="the modified address",
        )
        sim.update_node("m0", labels={})  # no longer a master
        rec.wait_names({"m1"}, timeout=1.0)
        sim.delete_node("m1")
        rec.wait_names(set(), timeout=1.0)


def test_a_heartbeat_that_changes_nothing_relevant_emits_no_snapshot(sim: KubeSim, tmp_path: Path) -> None:
    add_master(sim, "m0")
    rec = Recorder()
    with running_watcher(kubeconfig=sim.write_kubeconfig(tmp_path / "kc"), recorder=rec):
        rec.wait_names({"m0"})
        sim.touch_node("m0")
        add_master(sim, "m1")  # a change after the heartbeat proves the heartbeat was already processed
        rec.wait_names({"m0", "m1"})
        assert [snapshot_names(s) for s in rec.snapshots()] == [{"m0"}, {"m0", "m1"}]


def test_an_expired_resource_version_leads_to_a_relist_with_the_correct_state(
    sim: KubeSim, tmp_path: Path
) -> None:
    add_master(sim, "m0")
    add_master(sim, "m1")
    rec = Recorder()
    with running_watcher(kubeconfig=sim.write_kubeconfig(tmp_path / "kc"), recorder=rec):
        rec.wait_names({"m0", "m1"})
        lists_before = sim.request_count("list")
        sim.compact()
        sim.delete_node("m0")
        add_master(sim, "m2")
        sim.cut_streams()  # the re-watch from the old RV now gets 410 and must relist
        rec.wait_names({"m1", "m2"})
        assert sim.request_count("list") > lists_before


def test_a_cut_stream_is_resumed_from_the_last_resource_version_without_losing_events(
    sim: KubeSim, tmp_path: Path
) -> None:
    add_master(sim, "m0")
    rec = Recorder()
    with running_watcher(kubeconfig=sim.write_kubeconfig(tmp_path / "kc"), recorder=rec):
        rec.wait_names({"m0"})
        lists_before = sim.request_count("list")
        for i in range(3):
            watches = i + 1
            _wait_until(lambda: sim.request_count("watch") == watches, what=f"watch number {watches}")  # noqa: B023
            _wait_until(lambda: sim.open_streams() == 1, what="an open watch")
            sim.cut_streams()
            add_master(sim, f"n{i}")  # happens while no watch is open
        rec.wait_names({"m0", "n0", "n1", "n2"})
        assert sim.request_count("list") == lists_before, "resumed by relisting instead of re-watching"


def test_a_refusing_primary_switches_to_the_fallback_and_back_when_it_recovers(
    sim: KubeSim, fallback: KubeSim, tmp_path: Path
) -> None:
    add_master(sim, "m0")
    rec = Recorder()
    kubeconfig = sim.write_kubeconfig(tmp_path / "kc")
    with running_watcher(
        kubeconfig=kubeconfig, recorder=rec, fallback_server=fallback.url, relist_interval=25.0
    ):
        rec.wait_names({"m0"})
        sim.refuse()
        snap = rec.wait_names({"seen-through-fallback"})
        assert snap.fallback and snap.server == fallback.url
        status = rec.wait_status(lambda s: s.fallback)
        assert status.reachable and status.error and sim.url in status.error
        add_master(fallback, "added-on-fallback")
        rec.wait_names({"seen-through-fallback", "added-on-fallback"})
        sim.clear_faults()
        snap = rec.wait_names({"m0"}, timeout=5.0)  # probe every relist_interval/50 = 0.5 s
        assert not snap.fallback and snap.server == sim.url
        rec.wait_status(lambda s: not s.fallback and s.reachable and s.error is None)


def test_a_primary_answering_500_switches_to_the_fallback(
    sim: KubeSim, fallback: KubeSim, tmp_path: Path
) -> None:
    add_master(sim, "m0")
    sim.status500()
    rec = Recorder()
    kubeconfig = sim.write_kubeconfig(tmp_path / "kc")
    with running_watcher(kubeconfig=kubeconfig, recorder=rec, fallback_server=fallback.url):
        snap = rec.wait_names({"seen-through-fallback"})
        assert snap.fallback
        assert "HTTP 500" in (rec.wait_status(lambda s: s.fallback).error or "")


def test_a_hanging_primary_times_out_and_the_fallback_is_used(
    sim: KubeSim, fallback: KubeSim, tmp_path: Path
) -> None:
    add_master(sim, "m0")
    sim.hang()
    rec = Recorder()
    kubeconfig = sim.write_kubeconfig(tmp_path / "kc")
    started = time.monotonic()
    with running_watcher(
        kubeconfig=kubeconfig, recorder=rec, fallback_server=fallback.url, request_timeout=0.5
    ):
        rec.wait_names({"seen-through-fallback"})
        assert time.monotonic() - started < 3
        assert "timed out" in (rec.wait_status(lambda s: s.fallback).error or "")
        sim.clear_faults()


def test_a_server_certificate_from_another_ca_gives_a_clear_error_and_no_data(
    sim: KubeSim, tmp_path: Path
) -> None:
    add_master(sim, "m0")
    other = pki.make_ca(tmp_path / "other", name="other-ca")
    kubeconfig = pki.write_kubeconfig(
        tmp_path / "kc", server=sim.url, ca_cert=other.cert, client=sim.client_cert(user="monitor")
    )
    rec = Recorder()
    with running_watcher(kubeconfig=kubeconfig, recorder=rec):
        status = rec.wait_status(lambda s: not s.reachable)
        assert status.error and str(kubeconfig) in status.error and sim.url in status.error
        assert "server certificate not trusted" in status.error and "certificate-authority" in status.error
        assert "\n" not in status.error
        assert rec.snapshots() == []


def test_an_expired_client_certificate_gives_a_clear_error(sim: KubeSim, tmp_path: Path) -> None:
    kubeconfig = pki.write_kubeconfig(
        tmp_path / "kc", server=sim.url, ca_cert=sim.ca.cert, client=sim.client_cert(user="old", expired=True)
    )
    rec = Recorder()
    with running_watcher(kubeconfig=kubeconfig, recorder=rec):
        status = rec.wait_status(lambda s: not s.reachable)
        assert status.error and "client certificate" in status.error and "expired" in status.error
        assert rec.snapshots() == []


def test_a_garbage_kubeconfig_is_reported_and_fixing_it_then_reloading_recovers(
    sim: KubeSim, tmp_path: Path
) -> None:
    add_master(sim, "m0")
    kubeconfig = tmp_path / "kc"
    kubeconfig.write_text("this: [is not, a kubeconfig\n")
    rec = Recorder()
    with running_watcher(kubeconfig=kubeconfig, recorder=rec, backoff=(30.0, 60.0)) as watcher:
        status = rec.wait_status(lambda s: not s.reachable)
        assert status.error and status.error.startswith(f"kubeconfig {kubeconfig}:")
        sim.write_kubeconfig(kubeconfig)
        watcher.reload_credentials()  # the backoff is 30 s: only the reload can make this fast
        rec.wait_names({"m0"}, timeout=3.0)
        rec.wait_status(lambda s: s.reachable)


def test_a_missing_kubeconfig_is_reported_as_missing_with_its_path(tmp_path: Path) -> None:
    rec = Recorder()
    with running_watcher(kubeconfig=tmp_path / "absent", recorder=rec):
        status = rec.wait_status(lambda s: not s.reachable)
        assert status.error == f"kubeconfig {tmp_path / 'absent'} does not exist"


def test_a_refused_connection_is_reported_as_refused_by_that_server_not_as_a_timeout(
    sim: KubeSim, tmp_path: Path
) -> None:
    # A bound socket that never listens: the kernel refuses every connection, and nobody else can take the port.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        server = f"https://127.0.0.1:{closed.getsockname()[1]}"
        kubeconfig = sim.write_kubeconfig(tmp_path / "kc", server=server)
        rec = Recorder()
        with running_watcher(kubeconfig=kubeconfig, recorder=rec, request_timeout=10.0):
            status = rec.wait_status(lambda s: not s.reachable)
        assert status.error == f"kubeconfig {kubeconfig}: connection refused by {server}"


def test_a_rejected_token_is_reported_as_401_and_a_new_token_recovers_after_reload(
    sim: KubeSim, tmp_path: Path
) -> None:
    add_master(sim, "m0")
    kubeconfig = pki.write_kubeconfig(tmp_path / "kc", server=sim.url, ca_cert=sim.ca.cert, token="old-token")
    rec = Recorder()
    with running_watcher(kubeconfig=kubeconfig, recorder=rec) as watcher:
        status = rec.wait_status(lambda s: not s.reachable)
        assert status.error and "401" in status.error and "old-token" not in status.error
        sim.write_kubeconfig(kubeconfig, token="new-token", user="robot")
        watcher.reload_credentials()
        rec.wait_names({"m0"})


def test_a_rotated_kubelet_certificate_is_used_after_reload_credentials(sim: KubeSim, tmp_path: Path) -> None:
    add_master(sim, "m0")
    kubelet = pki.make_kubelet_pki(tmp_path / "pki", ca=sim.ca, user="system:node:before")
    kubeconfig = pki.write_kubeconfig(
        tmp_path / "kubelet.kubeconfig",
        server=sim.url,
        ca_cert=sim.ca.cert,
        client_cert_file=kubelet.current,
        client_key_file=kubelet.current,
    )
    rec = Recorder()
    with running_watcher(kubeconfig=kubeconfig, recorder=rec) as watcher:
        assert kubelet.current in watcher.credential_files()
        rec.wait_names({"m0"})
        kubelet.rotate(user="system:node:after")
        watcher.reload_credentials()
        _wait_until(
            lambda: any(r.user == "system:node:after" and r.kind == "watch" for r in sim.request_log()),
            what="a watch made with the rotated certificate",
        )
        add_master(sim, "m1")
        rec.wait_names({"m0", "m1"})
        users = [r.user for r in sim.request_log()]
        last_old = max(i for i, u in enumerate(users) if u == "system:node:before")
        assert set(users[last_old + 1 :]) == {"system:node:after"}


def test_credential_files_lists_the_kubeconfig_and_every_file_it_references(
    sim: KubeSim, tmp_path: Path
) -> None:
    kubeconfig = sim.write_kubeconfig(tmp_path / "kc", user="monitor")
    watcher = KubeWatcher(
        kubeconfig=kubeconfig, source="nodes", node_selector="", relist_interval=60, emit=lambda _: None
    )
    files = watcher.credential_files()
    assert files[0] == kubeconfig
    assert sim.ca.cert in files and len(files) == 4 and all(f.is_absolute() and f.exists() for f in files)


def test_endpointslices_source_delivers_the_kubernetes_slice(sim: KubeSim, tmp_path: Path) -> None:
    sim.set_endpoint_addresses(["192.0.2.1", "192.0.2.2"])
    rec = Recorder()
    with running_watcher(
        kubeconfig=sim.write_kubeconfig(tmp_path / "kc"), recorder=rec, source="endpointslices"
    ):
        rec.wait_names({"kubernetes"})
        sim.set_endpoint_addresses(["192.0.2.2"])
        rec.wait_for(
            lambda r: len(r.snapshots()[-1].items[0]["endpoints"]) == 1,
            timeout=1.0,
            what="the shrunk slice",
        )


def test_run_returns_within_half_a_second_of_stop_even_while_a_request_hangs(
    sim: KubeSim, tmp_path: Path
) -> None:
    add_master(sim, "m0")
    rec = Recorder()
    watcher = KubeWatcher(
        kubeconfig=sim.write_kubeconfig(tmp_path / "kc"),
        source="nodes",
        node_selector="",
        fallback_server=sim.url,
        relist_interval=60,
        emit=rec,
        request_timeout=30,
    )
    for phase in ("watching", "hanging"):
        stop = threading.Event()
        thread = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
        thread.start()
        rec.wait_names({"m0"})
        _wait_until(lambda: sim.open_streams() == 1, what="an open watch")
        if phase == "hanging":
            sim.hang()
            requests_before = sim.request_count()
            sim.cut_streams()
            _wait_until(lambda: sim.request_count() > requests_before, what="a hanging request")  # noqa: B023
        started = time.monotonic()
        stop.set()
        watcher.close()
        thread.join(2)
        assert time.monotonic() - started < 0.5, phase
        watcher = KubeWatcher(
            kubeconfig=tmp_path / "kc",
            source="nodes",
            node_selector="",
            fallback_server=sim.url,
            relist_interval=60,
            emit=rec,
            request_timeout=30,
        )
    sim.clear_faults()


def test_an_idle_watcher_sends_no_requests_beyond_its_watch(sim: KubeSim, tmp_path: Path) -> None:
    add_master(sim, "m0")
    rec = Recorder()
    with running_watcher(kubeconfig=sim.write_kubeconfig(tmp_path / "kc"), recorder=rec) as watcher:
        rec.wait_names({"m0"})
        _wait_until(lambda: sim.open_streams() == 1, what="an open watch")
        before, sent_before = sim.request_count(), watcher.request_count()
        time.sleep(3.0)  # an observation window, not a wait for a condition: bookmarks arrive every 0.3 s
        assert sim.request_count() == before and watcher.request_count() == sent_before == 2


def test_memory_after_import_and_first_list_stays_small(sim: KubeSim, tmp_path: Path) -> None:
    add_master(sim, "m0")
    kubeconfig = sim.write_kubeconfig(tmp_path / "kc")
    script = f"""
import resource, threading
from pathlib import Path
from monitor.adapters.kube import KubeWatcher
from monitor.events import Objects
got = threading.Event()
w = KubeWatcher(kubeconfig=Path({str(kubeconfig)!r}), source="nodes", node_selector="", relist_interval=60,
                emit=lambda x: got.set() if isinstance(x, Objects) else None)
stop = threading.Event()
t = threading.Thread(target=w.run, args=(stop,)); t.start()
assert got.wait(10)
rss = [l for l in open("/proc/self/status") if l.startswith("VmRSS")][0].split()[1]
stop.set(); w.close(); t.join()
import sys
print(int(rss) // 1024, "core_v1_api" in " ".join(sys.modules))
"""
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
        check=True,
    )
    rss_mb, heavy = out.stdout.split()
    print(f"adapter RSS after import + first list: {rss_mb} MB")
    assert heavy == "False"
    assert int(rss_mb) < 70


def _wait_until(predicate: object, *, timeout: float = 5.0, what: str) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_a_cut_watch_stream_counts_as_a_watch_restart(tmp_path):
    with KubeSim(directory=tmp_path / "api") as sim:
        add_master(sim, "m0", "192.0.2.1")
        kubeconfig = sim.write_kubeconfig(tmp_path / "kc")
        recorder = Recorder()
        with running_watcher(kubeconfig=kubeconfig, recorder=recorder) as watcher:
            recorder.wait_names({"m0"})
            _wait_until(lambda: sim.open_streams() == 1, what="the watch stream")
            assert watcher.watch_restarts() == 0
            sim.cut_streams()
            _wait_until(lambda: watcher.watch_restarts() == 1, what="the watch re-opened")
