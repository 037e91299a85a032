"""Steering timings with the real monitor process, HAProxy and nft in a private netns; prints figures only.

Runs ``tests/scenarios/steering.py --mode bench`` under ``unshare -n`` (as root) with the default
health thresholds (on after 3 good checks, off after 11 bad ones):

* at a 1 s check interval, ``--runs`` HAProxy stop/start cycles and monitor start/SIGTERM runs
  (the figures scale with the interval: divide by it to get "checks"); each stop and start happens
  at a random phase of the monitor's check cycle, as real outages do;
* at the default 6 s interval, one cycle (about two minutes; skip with ``--quick``);
* ``monitor probe`` wall time (20 runs) and a ``/metrics`` scrape (50 runs);
* the nft adapter alone (``NftSteering`` in an empty private netns, ``--nft-runs`` each): the first
  ensure (with the start-up sweep), a no-op ensure, a remove, a no-op remove, single- and dual-stack,
  and a start-up sweep that removes the reference's iptables-era rules (needs iptables-nft).

"healthy -> keepalived check passes" is OpenShift's keepalived monitor's check on our rules
(tests/keepalived_check.py), timed from HAProxy's first 200 on /haproxy_monitor.

Run: .venv/bin/python bench/bench_steering.py [--runs 5] [--nft-runs 20] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
HEALTH_ON, HEALTH_OFF = 3, 11


def scenario(*args: str, timeout: float) -> dict[str, Any]:
    argv = ["unshare", "-n", sys.executable, "-m", "tests.scenarios.steering", "--mode", "bench", *args]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False)
    lines = done.stdout.strip().splitlines()
    if not lines:
        raise SystemExit(f"scenario printed nothing (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    if result.get("error"):
        logs = "\n".join(f"--- {k}\n{v}" for k, v in result.get("logs", {}).items())
        raise SystemExit(f"scenario failed: {result['error']}\n{logs}")
    return result


def describe(name: str, values: list[float], interval: float | None, expected: str = "") -> str:
    if not values:
        return f"  {name}: no runs"
    med = statistics.median(values)
    line = f"  {name}: median {med:.3f} s (min {min(values):.3f}, max {max(values):.3f}, n={len(values)})"
    if interval:
        line += f" = {med / interval:.2f} check intervals"
    return line + (f"; expected {expected}" if expected else "")


def window(checks: int, interval: float) -> str:
    """The first counted check falls anywhere in the first interval, the last one checks-1 intervals later."""
    return f"{(checks - 1) * interval:g}-{checks * interval:g} s, median ~{(checks - 0.5) * interval:g} s"


def report(result: dict[str, Any], interval: float) -> None:
    bench = result["bench"]
    print(
        describe(
            "healthy (first 200) -> rules installed",
            bench["healthy_to_rules_s"],
            interval,
            window(HEALTH_ON, interval),
        )
    )
    print(
        describe(
            "unhealthy (HAProxy stopped) -> rules removed",
            bench["unhealthy_to_removed_s"],
            interval,
            window(HEALTH_OFF, interval),
        )
    )
    print(
        describe(
            "healthy (first 200) -> keepalived check passes",
            bench["healthy_to_check_s"],
            interval,
            window(HEALTH_ON, interval),
        )
    )
    print(describe("SIGTERM -> rules removed", bench["sigterm_to_removed_s"], None))


def nft_inner(runs: int) -> dict[str, list[float]]:
    """Run inside an empty private netns (``unshare -n``): time NftSteering's operations, in seconds."""
    from monitor.adapters.nftables import NftSteering
    from monitor.steering.rules import SteeringSpec

    def timed(call: Callable[[], object]) -> float:
        t0 = time.perf_counter()
        call()
        return time.perf_counter() - t0

    out: dict[str, list[float]] = {}
    for label, vips in (("dual-stack", ("192.0.2.10", "2001:db8::10")), ("single-stack", ("192.0.2.10",))):
        spec = SteeringSpec(vips=vips)
        for _ in range(runs):
            steering = NftSteering(spec=spec)
            out.setdefault(f"{label} first ensure (with sweep)", []).append(timed(steering.ensure))
            out.setdefault(f"{label} no-op ensure", []).append(timed(steering.ensure))
            out.setdefault(f"{label} remove", []).append(timed(steering.remove))
            out.setdefault(f"{label} no-op remove", []).append(timed(steering.remove))
    if shutil.which("iptables-nft"):
        rule = "-d 192.0.2.10 -p tcp --dport 6443 -m comment --comment OCP_API_LB_REDIRECT"
        for _ in range(runs):
            for chain, extra in (("PREROUTING", ""), ("OUTPUT", " -o lo")):
                subprocess.run(
                    f"iptables-nft -t nat -I {chain} {rule} -j REDIRECT --to-ports 9445{extra}".split(),
                    check=True,
                )
            steering = NftSteering(spec=SteeringSpec(vips=("192.0.2.10",)))
            out.setdefault("single-stack first ensure, sweeping 2 iptables-era rules", []).append(
                timed(steering.ensure)
            )
            steering.remove()
    return out


def nft_report(runs: int) -> dict[str, list[float]]:
    argv = ["unshare", "-n", sys.executable, str(Path(__file__).resolve()), "--nft-inner", str(runs)]
    done = subprocess.run(
        argv, cwd=REPO, capture_output=True, text=True, timeout=120 + runs * 10, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"nft timing failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    times: dict[str, list[float]] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"nft adapter (NftSteering, empty netns, n={runs} each):")
    for name, values in times.items():
        ms = [v * 1000 for v in values]
        print(f"  {name}: median {statistics.median(ms):.1f} ms (min {min(ms):.1f}, max {max(ms):.1f})")
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5, help="cycles and SIGTERM runs at the 1 s interval")
    ap.add_argument(
        "--quick", action="store_true", help="skip the two-minute run at the default 6 s interval"
    )
    ap.add_argument("--json", action="store_true", help="also print the raw scenario results")
    ap.add_argument("--nft-runs", type=int, default=20, help="runs of each nft adapter operation")
    ap.add_argument("--nft-inner", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.nft_inner:
        print(json.dumps(nft_inner(args.nft_inner)))
        return 0
    nft_times = nft_report(args.nft_runs)
    common = ["--health-on", str(HEALTH_ON), "--health-off", str(HEALTH_OFF)]

    fast = scenario(
        "--check-interval", "1s", *common,
        "--cycles", str(args.runs), "--sigterm-runs", str(args.runs),
        "--probe-runs", "20", "--scrape-runs", "50",
        timeout=60 + args.runs * 40,
    )  # fmt: skip
    print(f"steering, default thresholds (on {HEALTH_ON}, off {HEALTH_OFF}), check interval 1s:")
    report(fast, 1.0)
    bench = fast["bench"]
    probe_ms = [v * 1000 for v in bench["probe_s"]]
    scrape_ms = [v * 1000 for v in bench["scrape_s"]]
    print(
        f"monitor probe (process wall time, /haproxy_ready, exit codes {bench['probe_exit_codes']}): "
        f"median {statistics.median(probe_ms):.1f} ms (min {min(probe_ms):.1f}, max {max(probe_ms):.1f}, "
        f"n={len(probe_ms)})"
    )
    print(
        f"/metrics scrape ({bench['scrape_bytes']} bytes): median {statistics.median(scrape_ms):.2f} ms "
        f"(min {min(scrape_ms):.2f}, max {max(scrape_ms):.2f}, n={len(scrape_ms)})"
    )
    results: dict[str, Any] = {"interval_1s": fast, "nft": nft_times}
    if not args.quick:
        slow = scenario(
            "--check-interval", "6s", *common,
            "--cycles", "1", "--sigterm-runs", "1", "--probe-runs", "0", "--scrape-runs", "0",
            timeout=400,
        )  # fmt: skip
        print(f"steering, all defaults (on {HEALTH_ON}, off {HEALTH_OFF}, check interval 6s):")
        report(slow, 6.0)
        results["interval_6s"] = slow
    if args.json:
        print(json.dumps(results, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
