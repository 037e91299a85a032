"""The list and watch generators driven directly against the simulated API server: no watcher, no threads."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from monitor.adapters.kube.client import Api
from monitor.adapters.kube.credentials import SecretDir
from monitor.adapters.kube.errors import Gone
from monitor.adapters.kube.watching import (
    Change,
    Resource,
    WatchRequest,
    continuous_watch,
    list_objects,
    watch_events,
)
from monitor.testbed.apiserver import KubeSim
from tests.conftest_kube import MASTER, MASTER_SELECTOR, add_master

NODES = Resource(path="/api/v1/nodes", selector=MASTER_SELECTOR)


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[KubeSim]:
    with KubeSim(directory=tmp_path / "api", bookmark_interval=0.3) as server:
        yield server


@pytest.fixture
def api(sim: KubeSim, tmp_path: Path) -> Iterator[Api]:
    api = Api(
        kubeconfig=sim.write_kubeconfig(tmp_path / "kc", user="before"),
        request_timeout=2.0,
        secrets=SecretDir(tmp_path / "secrets"),
    )
    yield api
    api.close()


class Requests:
    """A next_request for continuous_watch: *count* watches of *timeout* seconds, with reloaded credentials."""

    def __init__(self, api: Api, *, count: int = 10, timeout: int = 30) -> None:
        self.api, self.left, self.timeout = api, count, timeout

    def __call__(self) -> WatchRequest | None:
        if self.left == 0:
            return None
        self.left -= 1
        return WatchRequest(client=self.api.credentials(), timeout=self.timeout)


def names(changes: list[Change]) -> list[tuple[str, str]]:
    return [(c.type, c.object["metadata"]["name"]) for c in changes if c.type != "BOOKMARK"]


def next_change(changes: Iterator[Change]) -> Change:
    return next(c for c in changes if c.type != "BOOKMARK")


def watched_versions(sim: KubeSim) -> list[str]:
    """The resourceVersion each watch request asked for, in order."""
    queries = [parse_qs(urlsplit(r.path).query) for r in sim.request_log() if r.kind == "watch"]
    return [q["resourceVersion"][0] for q in queries]


def test_a_list_holds_the_selected_objects_and_a_later_change_arrives_as_a_watch_event(
    sim: KubeSim, api: Api
) -> None:
    add_master(sim, "m0")
    sim.add_node("w0", labels={"node-role.kubernetes.io/worker": ""})
    listing = list_objects(api, api.credentials(), server=sim.url, resource=NODES)
    assert [o["metadata"]["name"] for o in listing.items] == ["m0"]
    assert listing.resource_version == str(sim.resource_version)

    events = watch_events(
        api,
        api.credentials(),
        server=sim.url,
        resource=NODES,
        since=listing.resource_version,
        timeout=30,
        stopped=lambda: False,
    )
    try:
        version = add_master(sim, "m1")  # made after the list: only the watch can report it
        change = next_change(events)
        assert (change.type, change.object["metadata"]["name"]) == ("ADDED", "m1")
        assert change.resource_version == str(version)
        sim.update_node("m1", labels={MASTER: ""}, addresses=[("InternalIP", "192.0.2.99")])
        change = next_change(events)  # made while the stream is open
        assert change.type == "MODIFIED"
        assert change.object["status"]["addresses"] == [{"type": "InternalIP", "address": "192.0.2.99"}]
    finally:
        events.close()


def test_a_bookmark_advances_the_resource_version_the_next_watch_starts_from(sim: KubeSim, api: Api) -> None:
    add_master(sim, "m0")
    listing = list_objects(api, api.credentials(), server=sim.url, resource=NODES)
    # A change outside the selection moves the server's version on without an event for this watch.
    sim.add_node("w0", labels={"node-role.kubernetes.io/worker": ""})
    moved = str(sim.resource_version)
    assert moved != listing.resource_version

    changes = list(
        continuous_watch(
            api,
            server=sim.url,
            resource=NODES,
            since=listing.resource_version,
            stopped=lambda: False,
            next_request=Requests(api, count=2, timeout=1),  # the server ends each watch after 1 s
            pause=lambda cuts: pytest.fail("no stream was cut"),
        )
    )

    assert changes and {c.type for c in changes} == {"BOOKMARK"}
    assert changes[0].resource_version == moved
    assert watched_versions(sim) == [listing.resource_version, moved]


def test_a_watch_from_an_expired_resource_version_raises_gone(sim: KubeSim, api: Api) -> None:
    add_master(sim, "m0")
    listing = list_objects(api, api.credentials(), server=sim.url, resource=NODES)
    sim.compact()
    events = watch_events(
        api,
        api.credentials(),
        server=sim.url,
        resource=NODES,
        since=listing.resource_version,
        timeout=30,
        stopped=lambda: False,
    )
    with pytest.raises(Gone, match="too old resource version"):
        next(events)


def test_after_a_410_the_continuous_watch_ends_at_once_so_the_relist_shows_what_changed_meanwhile(
    sim: KubeSim, api: Api
) -> None:
    add_master(sim, "m0")
    add_master(sim, "m1")
    listing = list_objects(api, api.credentials(), server=sim.url, resource=NODES)
    sim.compact()
    sim.delete_node("m0")
    add_master(sim, "m2")
    requests = Requests(api)

    stale = list(
        continuous_watch(
            api,
            server=sim.url,
            resource=NODES,
            since=listing.resource_version,
            stopped=lambda: False,
            next_request=requests,
            pause=lambda cuts: pytest.fail("a 410 is no reason to wait"),
        )
    )

    assert stale == [] and sim.request_count("watch") == 1  # no second watch from the forgotten version
    relisted = list_objects(api, api.credentials(), server=sim.url, resource=NODES)
    assert sorted(o["metadata"]["name"] for o in relisted.items) == ["m1", "m2"]


def test_a_cut_stream_is_watched_again_after_a_pause_without_a_relist_or_a_lost_event(
    sim: KubeSim, api: Api
) -> None:
    listing = list_objects(api, api.credentials(), server=sim.url, resource=NODES)
    pauses: list[int] = []
    changes = continuous_watch(
        api,
        server=sim.url,
        resource=NODES,
        since=listing.resource_version,
        stopped=lambda: False,
        next_request=Requests(api),
        pause=pauses.append,
    )
    try:
        add_master(sim, "m0")
        assert names([next_change(changes)]) == [("ADDED", "m0")]
        assert sim.cut_streams() == 1
        add_master(sim, "m1")  # happens while no watch is open
        seen = [next_change(changes)]
        while names(seen)[-1] != ("ADDED", "m1"):
            seen.append(next_change(changes))
    finally:
        changes.close()
    assert pauses == [0]
    assert sim.request_count("watch") == 2 and sim.request_count("list") == 1


def test_a_credential_reload_cuts_the_open_stream_and_the_next_watch_uses_the_new_credentials(
    sim: KubeSim, api: Api, tmp_path: Path
) -> None:
    listing = list_objects(api, api.credentials(), server=sim.url, resource=NODES)
    changes = continuous_watch(
        api,
        server=sim.url,
        resource=NODES,
        since=listing.resource_version,
        stopped=lambda: False,
        next_request=Requests(api),
        pause=lambda cuts: pytest.fail("a reload is not a cut stream: no pause"),
    )
    try:
        add_master(sim, "m0")
        next_change(changes)
        sim.write_kubeconfig(tmp_path / "kc", user="after")
        api.reload()
        add_master(sim, "m1")
        seen = [next_change(changes)]
        while names(seen)[-1] != ("ADDED", "m1"):
            seen.append(next_change(changes))
    finally:
        changes.close()
    watch_users = [r.user for r in sim.request_log() if r.kind == "watch"]
    assert watch_users == ["before", "after"]


def test_a_stop_check_that_turns_true_ends_the_watch_before_the_next_change_is_handed_out(
    sim: KubeSim, api: Api
) -> None:
    listing = list_objects(api, api.credentials(), server=sim.url, resource=NODES)
    stop = False
    changes = continuous_watch(
        api,
        server=sim.url,
        resource=NODES,
        since=listing.resource_version,
        stopped=lambda: stop,
        next_request=Requests(api),
        pause=lambda cuts: pytest.fail("no pause on stop"),
    )
    add_master(sim, "m0")
    add_master(sim, "m1")
    assert names([next_change(changes)]) == [("ADDED", "m0")]
    stop = True
    assert list(changes) == []
    assert sim.request_count("watch") == 1
