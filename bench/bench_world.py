"""Three control-plane hosts with keepalived VRRP under faults and reloads; prints tables (as root).

Builds ``monitor.testbed.world.World`` (three hosts in network namespaces on a bridge, each with a simulated API
server, HAProxy behind the reload handler, the monitor with steering, keepalived) and a client sending 20 HTTPS
requests a second to VIP:6443.

1. Fault matrix, once per track script (``monitor probe`` on /haproxy_monitor, the seeds' ``pkill -0 haproxy``):
   on the VIP holder h0, HAProxy killed / HAProxy alive but no API server reachable / the monitor killed
   (SIGKILL) / eth0 down / h0's API server down. Per fault: seconds until the VIP left h0 (``stays`` if it did
   not), failed client requests and the span they cover, seconds from the repair until the world is whole again
   (VIP back on h0, every server UP, every host steering, a request served). For "no backend" also the order of
   events: HAProxy's last server DOWN, the VIP moving, the monitor pulling steering.
2. Reloads under load (``--reloads N``, 100 by default): N backend changes on every host's API (an address change,
   back, a removal, an addition, repeated), each waited for in h0's HAProxy, while the client stream and
   ``--streams`` watch connections run: failed requests, latency p50/p99 with and without reloads, and what
   happened to each long-lived connection (kept, cut at once, cut after the reload handler's deadline).

Timings are the world's shortened ones (VRRP advert 1 s, track script interval 1 fall 2 rise 2, HAProxy checks
inter 1s fall 2, monitor check interval 1 s with on/off 3/11); ``--defaults`` uses the shipped ones instead
(script interval 2 fall 3, inter 5s fall 3, check interval 6 s): the order of events is what matters there.

Run: .venv/bin/python bench/bench_world.py [--faults a,b] [--checks probe,pkill] [--reloads 100] [--defaults]
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from monitor.testbed.apiserver import KubeSim
from monitor.testbed.world import CHECKS, MASTER, Host, Request, World

FAULTS = ("haproxy-killed", "no-backend", "monitor-killed", "link-down", "api-down")
RATE = 20.0


@dataclass
class Outcome:
    fault: str
    check: str
    moved: float | None = None  # seconds from the fault to the VIP leaving h0
    failed: int = 0
    span: float = 0.0  # first to last failed request
    back: float | None = None  # seconds from the repair to whole again
    events: dict[str, float] = field(default_factory=dict)
    note: str = ""


def whole(world: World) -> bool:
    h0 = world.hosts[0]
    return (
        world.holders() == [0]
        and set(h0.server_status().values()) == {"UP"}
        and all(world.steering(h) == 2 for h in world.hosts)
        and world.request_ok()
    )


def observe(
    world: World, t0: float, done: Callable[[dict[str, float]], bool], *, limit: float
) -> dict[str, float]:
    """Poll the world until ``done(events)`` or *limit* seconds; events are seconds after *t0*."""
    h0, events = world.hosts[0], {}
    while time.monotonic() - t0 < limit:
        now = time.monotonic() - t0
        holders = world.holders()
        if holders == [] and "no holder" not in events:
            events["no holder"] = now
        if holders not in ([], [0]) and "VIP moved" not in events:
            events["VIP moved"] = now
        try:
            status = h0.server_status()
        except (OSError, ValueError):
            status = {}
        if status and set(status.values()) == {"DOWN"} and "HAProxy: no server UP" not in events:
            events["HAProxy: no server UP"] = now
        if status.get("master-0") == "DOWN" and "HAProxy: master-0 DOWN" not in events:
            events["HAProxy: master-0 DOWN"] = now
        if world.steering(h0) == 0 and "h0 steering pulled" not in events:
            events["h0 steering pulled"] = now
        if done(events):
            break
        time.sleep(0.05)
    return events


def run_fault(world: World, fault: str) -> Outcome:
    h0 = world.hosts[0]
    out = Outcome(fault=fault, check=world.check)
    world.start_client(rate=RATE, duration=600)
    try:
        time.sleep(1.0)  # a second of normal traffic before the fault, as a reference in the client log
        t0 = time.monotonic()
        limit = 180.0
        if fault == "haproxy-killed":
            world.kill_haproxy(h0)
            events = observe(world, t0, lambda e: "VIP moved" in e, limit=limit)
        elif fault == "no-backend":
            world.block_backends(h0)
            # Until the VIP moves, or (if it stays) until the monitor has pulled steering and a few seconds more.
            events = observe(
                world,
                t0,
                lambda e: (
                    "VIP moved" in e
                    or ("h0 steering pulled" in e and time.monotonic() - t0 > e["h0 steering pulled"] + 15)
                ),
                limit=limit,
            )
        elif fault == "monitor-killed":
            world.kill_monitor(h0)
            events = observe(world, t0, lambda e: time.monotonic() - t0 > 10, limit=limit)
        elif fault == "link-down":
            world.link_down(h0)
            events = observe(world, t0, lambda e: "VIP moved" in e, limit=limit)
        elif fault == "api-down":
            world.api_down(h0)
            events = observe(
                world,
                t0,
                lambda e: (
                    "HAProxy: master-0 DOWN" in e and time.monotonic() - t0 > e["HAProxy: master-0 DOWN"] + 5
                ),
                limit=limit,
            )
        else:
            raise ValueError(fault)
        out.events = events
        out.moved = events.get("VIP moved")
        # Served again (by the new holder, or by h0 itself), before the repair: how long clients were without.
        end = time.monotonic() + 30
        while not world.request_ok(timeout=1.0) and time.monotonic() < end:
            time.sleep(0.1)
        repair = time.monotonic()
        if fault == "haproxy-killed":
            world.restart_haproxy(h0)
        elif fault == "no-backend":
            world.unblock_backends(h0)
        elif fault == "monitor-killed":
            world.restart_monitor(h0)
        elif fault == "link-down":
            world.link_up(h0)
        elif fault == "api-down":
            world.api_up(h0)
        out.back = world.wait(lambda: whole(world), timeout=120, what="the world whole again", poll=0.1)
        time.sleep(1.0)
    finally:
        world.stop_client()
    failed = [r for r in world.requests() if r.start >= t0 and not r.ok]
    out.failed = len(failed)
    out.span = (max(r.start for r in failed) - min(r.start for r in failed)) if failed else 0.0
    notes = []
    if out.moved is not None:
        after_move = [r for r in failed if out.moved + 0.5 < r.start - t0 and r.start < repair]
        if after_move:
            last = max(r.start for r in after_move) - t0 - out.moved
            notes.append(f"{len(after_move)} started after the move (the last {last:.1f} s after it)")
    after_repair = [r for r in failed if r.start >= repair]
    if after_repair:
        notes.append(f"{len(after_repair)} after the repair")
    out.note = "; ".join(notes)
    return out


def fmt(value: float | None, missing: str = "stays") -> str:
    return missing if value is None else f"{value:.1f}"


def fault_table(outcomes: list[Outcome]) -> None:
    print(
        f"\n{'fault':<16}{'check':<8}{'VIP moved (s)':>14}{'failed req':>12}{'fail span (s)':>15}{'back (s)':>10}  note"
    )
    for o in outcomes:
        print(
            f"{o.fault:<16}{o.check:<8}{fmt(o.moved):>14}{o.failed:>12}{o.span:>15.1f}{fmt(o.back, '-'):>10}  {o.note}"
        )
    print("\nevents (seconds after the fault):")
    for o in outcomes:
        print(
            f"  {o.fault:<16}{o.check:<8}"
            + ", ".join(f"{k} {v:.1f}" for k, v in sorted(o.events.items(), key=lambda kv: kv[1]))
        )


# ---- reloads under load ------------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def is_served(host: Host, expect: frozenset[str]) -> bool:
    return frozenset(s.address for s in host.haproxy().servers().values()) == expect


def reloads_under_load(world: World, *, changes: int, streams: int, baseline: float) -> None:
    h0, h2 = world.hosts[0], world.hosts[2]
    spare = "192.0.2.13"
    subprocess.run(["ip", "-n", h2.netns, "addr", "add", f"{spare}/24", "dev", "eth0"], check=True)
    sims = [h.sim for h in world.hosts if h.sim is not None]
    full = frozenset({"192.0.2.1:6443", "192.0.2.2:6443", "192.0.2.3:6443"})
    moved = frozenset({"192.0.2.1:6443", "192.0.2.2:6443", f"{spare}:6443"})
    without = frozenset({"192.0.2.1:6443", "192.0.2.3:6443"})

    def each(action: Callable[[KubeSim], object]) -> Callable[[], None]:
        def apply() -> None:
            for sim in sims:  # every host's API: each monitor reads its own
                action(sim)

        return apply

    steps = [
        (
            "address change",
            each(lambda s: s.update_node("master-2", addresses=[("InternalIP", spare)])),
            moved,
        ),
        (
            "address change",
            each(lambda s: s.update_node("master-2", addresses=[("InternalIP", "192.0.2.3")])),
            full,
        ),
        ("removal", each(lambda s: s.delete_node("master-1")), without),
        (
            "addition",
            each(lambda s: s.add_node("master-1", labels=MASTER, addresses=[("InternalIP", "192.0.2.2")])),
            full,
        ),
    ]
    world.start_client(rate=RATE, streams=streams, duration=baseline + changes * 5 + 60)
    try:
        calm_start = time.monotonic()
        time.sleep(baseline)
        calm_end = busy_start = time.monotonic()
        reload_times: list[float] = []
        took: list[float] = []
        for k in range(changes):
            _, act, expect = steps[k % len(steps)]
            t = time.monotonic()
            act()
            world.wait(
                partial(is_served, h0, expect), timeout=30, what=f"change {k} in h0's HAProxy", poll=0.1
            )
            reload_times.append(time.monotonic())
            took.append(reload_times[-1] - t)
        busy_end = time.monotonic()
        time.sleep(world.force_stop_after + 3)  # let the last retired workers reach the handler's deadline
    finally:
        world.stop_client()
    reqs = world.requests()

    def window(a: float, b: float) -> list[Request]:
        return [r for r in reqs if a <= r.start < b]

    calm, busy = window(calm_start, calm_end), window(busy_start, busy_end)
    print(f"\nreloads under load: {changes} backend changes in {busy_end - busy_start:.0f} s "
          f"(change to HAProxy serving it: median {statistics.median(took):.2f} s, max {max(took):.2f} s)")  # fmt: skip
    print(f"{'window':<20}{'requests':>10}{'failed':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for label, rs in (("without reloads", calm), ("during reloads", busy)):
        lat = [r.latency * 1000 for r in rs if r.ok]
        print(
            f"{label:<20}{len(rs):>10}{sum(not r.ok for r in rs):>8}{percentile(lat, 0.5):>9.1f}"
            f"{percentile(lat, 0.99):>9.1f}{max(lat, default=float('nan')):>9.1f}"
        )
    reasons: dict[str, int] = {}
    for r in busy:
        if not r.ok:
            reasons[r.reason] = reasons.get(r.reason, 0) + 1
    if reasons:
        print("failed during reloads: " + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())))
    ends = [e for e in world.stream_ends() if e.ended >= busy_start and e.reason != "stopped"]
    kinds: dict[str, int] = {
        "cut at once (<1 s after a reload)": 0,
        "cut after the handler's deadline": 0,
        "other": 0,
    }
    for e in ends:
        retiring = [t for t in reload_times if t >= e.opened]
        since = e.ended - retiring[0] if retiring else float("inf")
        if since < 1.0:
            kinds["cut at once (<1 s after a reload)"] += 1
        elif abs(since - world.force_stop_after) < 3.0:
            kinds["cut after the handler's deadline"] += 1
        else:
            kinds["other"] += 1
    kept = [e for e in world.stream_ends() if e.reason == "stopped" and e.opened < busy_start]
    print(f"long-lived connections ({streams} watches, handler deadline {world.force_stop_after:.0f} s): "
          + ", ".join(f"{k}: {v}" for k, v in kinds.items())
          + f"; open from before the first reload to the end: {len(kept)}")  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--faults", default=",".join(FAULTS), help="comma-separated subset of " + ",".join(FAULTS)
    )
    ap.add_argument("--checks", default=",".join(CHECKS), help="track scripts: probe, pkill")
    ap.add_argument("--reloads", type=int, default=100, help="backend changes under load (0: skip)")
    ap.add_argument("--streams", type=int, default=4, help="long-lived watch connections during reloads")
    ap.add_argument("--deadline", type=float, default=10.0, help="reload handler's force-stop deadline (s)")
    ap.add_argument("--defaults", action="store_true", help="shipped timings instead of the shortened ones")
    args = ap.parse_args()
    # A SIGTERM (timeout(1), a killed CI job) unwinds through the worlds' stop(), which deletes the namespaces.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    timing: dict[str, object] = {}
    if args.defaults:
        timing = {
            "haproxy_inter": "5s",
            "haproxy_fall": 3,
            "check_interval": "6s",
            "script_interval": 2,
            "script_fall": 3,
        }
    outcomes = []
    for check in [c for c in args.checks.split(",") if c]:
        with World(check=check, **timing) as world:  # type: ignore[arg-type]
            for fault in [f for f in args.faults.split(",") if f]:
                outcome = run_fault(world, fault)
                print(f"{fault} / {check}: {outcome}", flush=True)
                outcomes.append(outcome)
    if outcomes:
        fault_table(outcomes)
    if args.reloads:
        with World(check="probe", settle="0.3s", force_stop_after=args.deadline, **timing) as world:  # type: ignore[arg-type]
            reloads_under_load(world, changes=args.reloads, streams=args.streams, baseline=20.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
