"""A soak run that compresses days into minutes: the monitor under reconnects, changes, scrapes and rotations.

Against the simulated API and a real HAProxy (``monitor.testbed.host``), in rounds. Each round does its share
of four streams at once: watch streams ended by the server (as their timeout does; every ``cut_every``-th is cut
abruptly instead), Node address changes until HAProxy serves each, ``/metrics`` scrapes on keep-alive
connections, and kubelet client-certificate rotations until the monitor watches with each new certificate.
After each round, once everything is quiet, the monitor's CPU (process tree), RSS, open fds and threads are
taken. The first round is the warm-up: the last round's figures are compared with its.

Run (as root; it re-runs itself in a private network namespace)::

    .venv/bin/python -m monitor.testbed.soak [--scale 0.1] [--rounds 10] [--json]
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from monitor.testbed.apiserver import KubeSim
from monitor.testbed.host import (
    Footprint,
    HostError,
    MonitorHost,
    cpu_sample,
    in_private_netns,
    reexec_in_private_netns,
    settled_footprint,
)

STEP_TIMEOUT = 30.0  # one reconnect, change or rotation on a busy machine; a stuck monitor fails the run


@dataclass(frozen=True)
class Workload:
    """Totals over the whole run (the warm-up round included), split evenly over *rounds*."""

    reconnects: int = 10_000
    changes: int = 1_000
    scrapes: int = 100_000
    rotations: int = 1_000
    rounds: int = 10
    cut_every: int = 50  # every n-th reconnect is an abrupt cut (the monitor pauses before it watches again)
    scrapers: int = 2  # concurrent /metrics clients

    def scaled(self, factor: float) -> Workload:
        def part(n: int) -> int:
            return max(self.rounds, round(n * factor))

        return replace(
            self,
            reconnects=part(self.reconnects),
            changes=part(self.changes),
            scrapes=part(self.scrapes),
            rotations=part(self.rotations),
        )

    def share(self, total: int, index: int) -> int:
        """Round *index*'s part of *total* (the parts add up to it)."""
        return total * (index + 1) // self.rounds - total * index // self.rounds


@dataclass(frozen=True)
class Round:
    index: int
    seconds: float
    stream_seconds: dict[str, float]  # how long each stream took within the round
    cpu_seconds: float
    reconnects: int
    changes: int
    scrapes: int
    rotations: int
    footprint: Footprint

    @property
    def operations(self) -> int:
        return self.reconnects + self.changes + self.scrapes + self.rotations


def _more_watches(sim: KubeSim, before: int) -> bool:
    return sim.request_count("watch") > before


class Soak:
    """Drives one MonitorHost through the workload; every method raises HostError when a step times out."""

    def __init__(self, host: MonitorHost, workload: Workload) -> None:
        self.host = host
        self.workload = workload
        self._reconnects_done = 0
        self._changes_done = 0
        self._rotations_done = 0
        assert host.sim is not None and host.kubelet is not None
        self.sim = host.sim
        self.kubelet = host.kubelet
        # A few identities, issued once, that the rotations cycle through (openssl a thousand times would
        # measure openssl); consecutive rotations always differ.
        self.identities = [
            (f"system:node:soak-{i}", self.sim.client_cert(user=f"system:node:soak-{i}")) for i in range(3)
        ]
        self._previous_target: Path | None = None

    # -- the four streams -----------------------------------------------------------------------------------------
    def reconnect(self, count: int) -> None:
        for _ in range(count):
            abrupt = self.workload.cut_every > 0 and self._reconnects_done % self.workload.cut_every == (
                self.workload.cut_every - 1
            )
            self._one_reconnect(abrupt=abrupt)
            self._reconnects_done += 1

    def _one_reconnect(self, *, abrupt: bool) -> None:
        sim = self.sim
        deadline = time.monotonic() + STEP_TIMEOUT
        while time.monotonic() < deadline:
            self.host.wait(
                lambda: sim.open_streams() >= 1, timeout=STEP_TIMEOUT, what="an open watch", poll=0.002
            )
            before = sim.request_count("watch")
            ended = sim.cut_streams() if abrupt else sim.end_streams()
            if not ended:
                continue  # a rotation had just cut it: end the next one
            self.host.wait(
                partial(_more_watches, sim, before), timeout=STEP_TIMEOUT, what="the watch opened again"
            )
            return
        raise HostError("no watch stream to end")

    def change(self, count: int) -> None:
        spares = self.host.spare_addresses
        for _ in range(count):
            address = spares[self._changes_done % len(spares)]
            self.sim.update_node("master-0", addresses=[("InternalIP", address)])
            self.host.wait(
                partial(self._serves, address),
                timeout=STEP_TIMEOUT,
                what=f"HAProxy serving {address}",
            )
            self._changes_done += 1

    def scrape(self, count: int) -> None:
        per_client = [
            count // self.workload.scrapers + (i < count % self.workload.scrapers)
            for i in range(self.workload.scrapers)
        ]
        errors: list[str] = []

        def client(n: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", self.host.listen_port, timeout=STEP_TIMEOUT)
            try:
                for _ in range(n):
                    conn.request("GET", "/metrics")
                    resp = conn.getresponse()
                    body = resp.read()
                    if resp.status != 200 or b"haproxy_monitor_server_up{" not in body:
                        errors.append(f"/metrics answered {resp.status} without per-server status")
                        return
            except (OSError, http.client.HTTPException) as exc:
                errors.append(f"/metrics: {exc}")
            finally:
                conn.close()

        threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in per_client]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise HostError(errors[0])

    def rotate(self, count: int) -> None:
        for _ in range(count):
            user, pair = self.identities[self._rotations_done % len(self.identities)]
            target = self.kubelet.install(pair)
            if self._previous_target is not None:
                self._previous_target.unlink(missing_ok=True)  # the kubelet keeps only the current one
            self._previous_target = target
            # The monitor rebuilds its client and watches again: the newest request carries the new identity.
            self.host.wait(
                partial(self._latest_user_is, user), timeout=STEP_TIMEOUT, what=f"a request as {user}"
            )
            self._rotations_done += 1

    def _latest_user_is(self, user: str) -> bool:
        log = self.sim.request_log()
        return bool(log) and log[-1].user == user

    def _serves(self, address: str) -> bool:
        return address in self.host.served()

    # -- rounds -----------------------------------------------------------------------------------------------------
    def run_round(self, index: int) -> Round:
        w = self.workload
        quotas = {
            "reconnects": w.share(w.reconnects, index),
            "changes": w.share(w.changes, index),
            "scrapes": w.share(w.scrapes, index),
            "rotations": w.share(w.rotations, index),
        }
        streams: dict[str, Callable[[int], None]] = {
            "reconnects": self.reconnect,
            "changes": self.change,
            "scrapes": self.scrape,
            "rotations": self.rotate,
        }
        failures: list[BaseException] = []
        took: dict[str, float] = {}

        def run(name: str) -> None:
            start = time.monotonic()
            try:
                streams[name](quotas[name])
            except BaseException as exc:  # reported by the round
                failures.append(exc)
            took[name] = time.monotonic() - start

        cpu0 = cpu_sample(self.host.pid)
        started = time.monotonic()
        threads = [threading.Thread(target=run, args=(name,), daemon=True) for name in streams]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if failures:
            raise HostError(f"round {index}: {failures[0]}")
        seconds = time.monotonic() - started
        # Quiet again: a watch open, the last backend served; then what the process holds.
        self.host.wait(lambda: self.sim.open_streams() >= 1, timeout=STEP_TIMEOUT, what="an open watch")
        cpu1 = cpu_sample(self.host.pid)
        return Round(
            index=index,
            seconds=seconds,
            stream_seconds={k: round(v, 2) for k, v in sorted(took.items())},
            cpu_seconds=cpu1.ticks_seconds - cpu0.ticks_seconds,
            footprint=settled_footprint(self.host.pid),
            **quotas,
        )


def report(rounds: list[Round], workload: Workload, total_seconds: float) -> dict[str, Any]:
    """Print the per-round table and the verdict; returns the figures as JSON-able data."""
    print(
        f"soak: {workload.reconnects} watch reconnects (1 in {workload.cut_every} cut abruptly), {workload.changes} "
        f"backend changes, {workload.scrapes} /metrics scrapes, {workload.rotations} certificate rotations, "
        f"in {workload.rounds} rounds (round 0 is the warm-up), {total_seconds:.0f} s"
    )
    names = sorted(rounds[0].stream_seconds)
    print(
        f"  {'round':>5} {'s':>6} {'CPU s':>7} {'CPU ms/op':>9} {'RSS MB':>7} {'anon MB':>7} {'fds':>4} {'threads':>7}"
        f"   stream s ({', '.join(names)})"
    )
    for r in rounds:
        f = r.footprint
        per_op = r.cpu_seconds / r.operations * 1000 if r.operations else 0.0
        print(
            f"  {r.index:>5} {r.seconds:6.1f} {r.cpu_seconds:7.2f} {per_op:9.3f} {f.rss_mb:7.1f} {f.rss_anon_mb:7.1f} "
            f"{f.fds:>4} {f.threads:>7}   {' '.join(f'{r.stream_seconds.get(n, 0):.1f}' for n in names)}"
        )
    warm, last = rounds[0].footprint, rounds[-1].footprint
    measured = rounds[1:] or rounds
    first_cost = measured[0].cpu_seconds / max(1, measured[0].operations)
    last_cost = measured[-1].cpu_seconds / max(1, measured[-1].operations)
    verdict = {
        "rss_growth_mb": round(last.rss_mb - warm.rss_mb, 2),
        "rss_anon_growth_mb": round(last.rss_anon_mb - warm.rss_anon_mb, 2),
        "fd_growth": last.fds - warm.fds,
        "thread_growth": last.threads - warm.threads,
        "cpu_per_op_last_vs_first": round(last_cost / first_cost, 2) if first_cost else None,
        "peak_rss_mb": round(last.peak_rss_mb, 1),
    }
    print(
        f"  end vs after warm-up: RSS {verdict['rss_growth_mb']:+.2f} MB "
        f"(anonymous {verdict['rss_anon_growth_mb']:+.2f}), fds {verdict['fd_growth']:+d}, "
        f"threads {verdict['thread_growth']:+d}; CPU per operation, last round / first measured: "
        f"{verdict['cpu_per_op_last_vs_first']}; peak RSS {verdict['peak_rss_mb']} MB"
    )
    return {"rounds": [dict(asdict(r), operations=r.operations) for r in rounds], "verdict": verdict}


def inner(args: argparse.Namespace) -> int:
    workload = replace(Workload(rounds=args.rounds, cut_every=args.cut_every), scrapers=args.scrapers).scaled(
        args.scale
    )
    counts = {
        k: getattr(args, k) for k in ("reconnects", "changes", "scrapes", "rotations") if getattr(args, k)
    }
    workload = replace(workload, **counts)
    host = MonitorHost(
        layout=args.layout,
        check_interval=args.check_interval,
        spares=4,
        # Watches that end every few milliseconds instead of every few minutes: the request pacing (1/s in
        # production) is compressed with them, or 10,000 reconnects would take hours.
        extra_args=(
            "--settle",
            args.settle,
            "--settle-max",
            "1s",
            "--kube-api-qps",
            "1000",
            "--kube-api-burst",
            "50",
        ),
    )
    started = time.monotonic()
    try:
        host.start()
        soak = Soak(host, workload)
        rounds = []
        for index in range(workload.rounds):
            rounds.append(soak.run_round(index))
        result = report(rounds, workload, time.monotonic() - started)
        errors = host.error_lines()
        result["monitor_error_lines"] = len(errors)
        if errors:
            print(f"  the monitor logged {len(errors)} error lines; first: {errors[0]}")
        if args.json:
            print(json.dumps(result))
        return 0
    except HostError as exc:
        print(f"soak: {exc}; monitor log: {host.log_tail()}", file=sys.stderr)
        if args.json:
            print(json.dumps({"error": str(exc)}))
        return 1
    finally:
        host.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every total (0.1: a tenth of the run)")
    ap.add_argument("--reconnects", type=int, default=0, help="override the total (after --scale)")
    ap.add_argument("--changes", type=int, default=0)
    ap.add_argument("--scrapes", type=int, default=0)
    ap.add_argument("--rotations", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--cut-every", type=int, default=50)
    ap.add_argument("--scrapers", type=int, default=2)
    ap.add_argument("--check-interval", default="1s", help="the monitor's (health checks compress too)")
    ap.add_argument("--settle", default="50ms", help="the monitor's --settle")
    ap.add_argument("--layout", choices=("pod", "socket"), default="pod")
    ap.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = ap.parse_args(argv)
    if args.rounds < 2:
        ap.error("--rounds must be at least 2 (the first is the warm-up)")
    if in_private_netns():
        return inner(args)
    return reexec_in_private_netns(["-m", "monitor.testbed.soak", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
