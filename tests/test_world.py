"""Three control-plane hosts with keepalived VRRP, HAProxy and the monitor: where the VIP goes under faults.

One world per track-script flavour (``monitor probe`` on /haproxy_monitor, and the seeds' ``pkill -0 haproxy``),
shared by the module's tests; each test breaks the VIP holder (h0, the highest priority), checks the outcome a
user would see, repairs it and waits until the world is whole again. The full matrix with figures is
``bench/bench_world.py``.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator

import pytest

from monitor.testbed.world import CHECKS, Request, World

pytestmark = pytest.mark.timeout(240)


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("ip", "nft", "keepalived", "haproxy", "pkill"):
        if shutil.which(tool, path="/usr/sbin:/sbin:" + os.environ.get("PATH", "")) is None:
            return f"needs {tool}"
    return None


@pytest.fixture(scope="module", params=CHECKS)
def world(request: pytest.FixtureRequest) -> Iterator[World]:
    if reason := _missing():
        pytest.skip(reason)
    w = World(check=request.param)
    w.start()
    try:
        yield w
    finally:
        w.stop()


def whole_again(world: World, *, timeout: float = 60) -> float:
    """Wait until h0 holds the VIP again, HAProxy there sees every API server and a request succeeds."""
    h0 = world.hosts[0]
    return world.wait(
        lambda: (
            world.holders() == [0]
            and set(h0.server_status().values()) == {"UP"}
            and all(world.steering(h) == 2 for h in world.hosts)
            and world.request_ok()
        ),
        timeout=timeout,
        what="the world whole again (VIP on h0, every server UP, every host steering, a request served)",
    )


def failed_between(requests: list[Request], start: float, end: float) -> list[Request]:
    return [r for r in requests if start <= r.start <= end and not r.ok]


def test_the_vip_sits_on_one_host_and_requests_to_it_go_through_that_hosts_haproxy(world: World) -> None:
    assert world.holders() == [0]
    before = [h.frontend_sessions() for h in world.hosts]
    for _ in range(5):
        assert world.request_ok()
    after = [h.frontend_sessions() for h in world.hosts]
    assert after[0] - before[0] >= 5, (before, after)
    assert after[1:] == before[1:], "the other hosts' HAProxies saw client traffic"


def test_killing_haproxy_on_the_vip_holder_moves_the_vip_and_it_returns_after_restart(world: World) -> None:
    h0 = world.hosts[0]
    world.start_client(rate=20, duration=120)
    try:
        t0 = time.monotonic()
        world.kill_haproxy(h0)
        # Both checks see this one: no haproxy process in h0's namespace, and nothing answers /haproxy_monitor.
        world.wait(lambda: world.holders() not in ([], [0]), timeout=30, what="the VIP leaving h0")
        moved = time.monotonic()
        world.wait(lambda: world.request_ok(), timeout=30, what="the new holder serving the VIP")
        served = time.monotonic()
        world.wait(
            lambda: len([r for r in world.requests() if r.start > served]) >= 20,
            timeout=10,
            what="20 requests",
        )
        repair = time.monotonic()
        world.restart_haproxy(h0)
        whole_again(world)
    finally:
        world.stop_client()
    late = [r for r in world.requests() if served + 1.0 < r.start < repair and not r.ok]
    assert moved - t0 < 15
    assert late == [], late[:3]  # the new holder serves every request


def test_with_haproxy_alive_but_no_backend_only_monitor_probe_moves_the_vip(world: World) -> None:
    h0 = world.hosts[0]
    world.start_client(rate=20, duration=120)
    try:
        world.block_backends(h0)
        world.wait(
            lambda: set(h0.server_status().values()) == {"DOWN"},
            timeout=20,
            what="h0's HAProxy losing every server",
        )
        all_down = time.monotonic()
        if world.check == "probe":
            world.wait(lambda: world.holders() not in ([], [0]), timeout=15, what="the VIP leaving h0")
            assert time.monotonic() - all_down < 10
            world.wait(lambda: world.request_ok(), timeout=20, what="the new holder serving the VIP")
        else:
            # pkill -0 still finds HAProxy: the VIP stays on a host whose HAProxy reaches no API server, and the
            # client fails until the monitor pulls steering (11 checks) and VIP:6443 reaches h0's API directly.
            world.wait(lambda: not world.request_ok(timeout=1.0), timeout=10, what="a failing request")
            world.wait(lambda: world.steering(h0) == 0, timeout=40, what="h0's monitor pulling steering")
            assert world.holders() == [0]
            assert failed_between(world.requests(), all_down, time.monotonic())
        world.unblock_backends(h0)
        whole_again(world)
    finally:
        if world.backends_blocked(h0):
            world.unblock_backends(h0)
        world.stop_client()


def test_one_api_server_down_keeps_the_vip_and_haproxy_routes_around_it(world: World) -> None:
    h0 = world.hosts[0]
    world.start_client(rate=20, duration=120)
    try:
        world.api_down(h0)
        world.wait(
            lambda: h0.server_status()["master-0"] == "DOWN", timeout=20, what="HAProxy marking master-0 DOWN"
        )
        marked = time.monotonic()
        world.wait(
            lambda: len([r for r in world.requests() if r.start > marked + 0.5]) >= 40,
            timeout=30,
            what="40 requests after the mark",
        )
        assert world.holders() == [0]
        world.api_up(h0)
        whole_again(world)
    finally:
        if not world.api_running(h0):
            world.api_up(h0)
        world.stop_client()
    assert failed_between(world.requests(), marked + 0.5, marked + 60) == []


def test_killing_the_monitor_leaves_its_rules_and_the_vip_in_place_and_clients_served(world: World) -> None:
    h0 = world.hosts[0]
    world.start_client(rate=20, duration=120)
    try:
        world.kill_monitor(h0)
        killed = time.monotonic()
        world.wait(
            lambda: len([r for r in world.requests() if r.start > killed]) >= 60,
            timeout=30,
            what="60 requests after the kill",
        )
        seen = time.monotonic()
        assert world.holders() == [0]
        assert world.steering(h0) == 2  # SIGKILL: nobody removed the rules, HAProxy keeps serving
        world.restart_monitor(h0)
        whole_again(world)
    finally:
        if h0.monitor is None or h0.monitor.poll() is not None:
            world.restart_monitor(h0)
        world.stop_client()
    assert failed_between(world.requests(), killed, seen) == []
