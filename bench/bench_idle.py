"""Idle cost of the main job: CPU-seconds per minute (process tree), wake-ups, RSS; prints figures only.

The real monitor process runs with steering on (real nft, in a private network namespace: the script
re-runs itself under ``unshare -n``), the default 6 s check interval, the simulated API server and a real
HAProxy behind the reload handler that is healthy. By default it sees what the static pod shows it: the Go
template and no admin socket (hidden in its own mount namespace), so statistics come from the stats page.
The template and the kubeconfig live in one directory, the kubelet's client certificate
(``kubelet-client-current.pem``, a symlink) in another, as on a host; a neighbour process reads one file
and rewrites another in each of those directories ``--neighbour-hz`` times a second (files the monitor
does not use). After convergence (every backend served, steering rules
installed) the monitor is measured over idle windows of ``--seconds``: without and with the neighbour.

CPU is the whole process tree: the scheduler's runtime of every thread of the monitor and of its live
children (nanoseconds, ``/proc/P/task/T/schedstat``) plus cutime+cstime of the children it has reaped, such
as ``nft``; the "ticks" column is ``/proc/PID/stat`` utime+stime+cutime+cstime alone, in 10 ms clock ticks.
Wake-ups are the monitor's context switches (voluntary + involuntary, summed over its threads) per minute.

What still wakes an idle monitor, by thread (the per-thread table shows them; everything else blocks without
a timeout: the file watcher in poll(), the status server in select(), the watcher's stop bridges on events):

* poll thread, every check interval: GET /haproxy_monitor (the health hysteresis counts checks, as the
  reference does) and one stats read (the "server state changed" log line), each on a kept connection;
  then both are posted in one call.
* loop thread: once per posted pair (the wake-up, and the interpreter lock handed over). Its own timeout
  is a guard of 2 check intervals that the posts pre-empt; settle, reload-retry and write-retry deadlines
  shorten it only while one is pending. Steering runs here on each health sample: a non-blocking read of
  the kernel's nftables notifications, nft only when our tables changed.
* kube watcher: a watch bookmark about once a minute (API server), a new watch when one times out
  (5-10 min), a relist every 50 check intervals (the safety net behind the watch); on the fallback server,
  a probe of the primary every interval.

The "floor" windows measure, beside the running monitor, a bare interpreter that does only the two exchanges
every cycle needs (the health GET and the stats page GET, no parsing, no threads): what any Python sidecar
polling at this interval pays, on new connections ("floor") or on kept ones ("floor-kept", as the monitor
does). The monitor's poll thread is compared with them.

Run: .venv/bin/python bench/bench_idle.py [--seconds 60] [--layout pod|socket] [--neighbour-hz 20]
     [--neighbour-mode inplace|rename] [--windows quiet,neighbour,floor,floor-kept]
"""

from __future__ import annotations

import argparse
import base64
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from monitor.settings import parse_duration
from monitor.statsconfig import stats_endpoints
from monitor.testbed.host import (
    HostError,
    MonitorHost,
    cpu_between,
    cpu_sample,
    footprint,
    in_private_netns,
    reexec_in_private_netns,
    thread_counters,
)

# The neighbour: per tick and per directory, one read of a file and one rewrite of another (in place, or as
# a temporary file renamed over it, as editors and atomic writers do).
NEIGHBOUR = r"""
import os, sys, time
hz, mode, dirs = float(sys.argv[1]), sys.argv[2], sys.argv[3:]
for d in dirs:
    with open(os.path.join(d, "neighbour-read.txt"), "w") as f:
        f.write("read me\n" * 64)
n, period, start = 0, 1.0 / hz, time.monotonic()
while True:
    for d in dirs:
        with open(os.path.join(d, "neighbour-read.txt")) as f:
            f.read()
        target = os.path.join(d, "neighbour-write.txt")
        if mode == "rename":
            tmp = target + ".tmp"
            with open(tmp, "w") as f:
                f.write(f"{n}\n")
            os.replace(tmp, target)
        else:
            with open(target, "w") as f:
                f.write(f"{n}\n")
    n += 1
    time.sleep(max(0.0, start + n * period - time.monotonic()))
"""

# The floor: a bare interpreter (stdlib sockets, no monitor code, no threads) that does only what every cycle
# must do, the health GET and the stats page GET, every check interval: "fresh", each on a new connection
# (Connection: close, read to the end); "kept", HTTP/1.1 on one connection per endpoint, as the monitor does
# (each answer read to its end: the health page's Content-Length, the stats page's last chunk).
FLOOR = r"""
import socket, sys, time
interval, kept = float(sys.argv[1]), sys.argv[2] == "kept"
exchanges = [(h, int(p), r.encode()) for h, p, r in zip(*[iter(sys.argv[3:])] * 3)]
conns = {}
while True:
    for host, port, request in exchanges:
        if not kept:
            with socket.create_connection((host, port), timeout=2) as sock:
                sock.sendall(request)
                while sock.recv(65536):
                    pass
            continue
        sock = conns.get(port) or conns.setdefault(port, socket.create_connection((host, port), timeout=2))
        sock.sendall(request)
        data = sock.recv(65536)
        while not (data.endswith(b"\r\n0\r\n\r\n") or data.endswith(b"</html>\n")):
            data += sock.recv(65536)
    time.sleep(interval)
"""


def floor_process(host: MonitorHost, interval: float, mode: str) -> subprocess.Popen[bytes]:
    """The FLOOR script against the same HAProxy endpoints as the monitor (the stats page with its credentials)."""
    (page,) = stats_endpoints(host.lab.cfg_path.read_text()).pages
    token = base64.b64encode(f"{page.user}:{page.password}".encode()).decode()
    close = "Connection: close\r\n" if mode == "fresh" else ""
    health = f"GET /haproxy_monitor HTTP/1.1\r\nHost: 127.0.0.1\r\n{close}\r\n"
    stats = (
        f"GET {page.csv_target} HTTP/1.1\r\nHost: {page.host}\r\nAuthorization: Basic {token}\r\n{close}\r\n"
    )
    argv = [
        sys.executable,
        "-I",
        "-c",
        FLOOR,
        str(interval),
        mode,
        "127.0.0.1",
        str(host.lab.monitor_port),
        health,
    ]
    return subprocess.Popen([*argv, page.host, str(page.port), stats])


def measure(pid: int, seconds: float) -> dict[str, Any]:
    cpu0, threads0 = cpu_sample(pid), thread_counters(pid)
    time.sleep(seconds)
    cpu1, threads1 = cpu_sample(pid), thread_counters(pid)
    per_min = 60.0 / seconds
    per_thread = []
    for tid, (switches, runtime, wchan) in sorted(threads1.items()):
        s0, r0, _ = threads0.get(tid, (0, 0.0, ""))
        wakes, cpu_ms = (switches - s0) * per_min, (runtime - r0) * per_min * 1000
        per_thread.append({"tid": tid, "wakeups": wakes, "cpu_ms": cpu_ms, "wchan": wchan})
    return {
        "cpu_s_per_min": cpu_between(cpu0, cpu1) * per_min,
        "cpu_s_per_min_ticks": (cpu1.ticks_seconds - cpu0.ticks_seconds) * per_min,
        "precise": cpu0.tasks == cpu1.tasks,
        "wakeups_per_min": sum(t["wakeups"] for t in per_thread),
        "threads": per_thread,
    }


def inner(args: argparse.Namespace) -> int:
    """Inside the private network namespace: set everything up, converge, measure, print."""
    host = MonitorHost(layout=args.layout, check_interval=args.check_interval, template=args.template)
    neighbour: subprocess.Popen[bytes] | None = None
    try:
        started = time.monotonic()
        host.start()
        print(f"start → backends served and steering rules installed: {time.monotonic() - started:.1f} s")
        # Converged: the cycle after the install looks at the rules once more (the kernel reported our own
        # change); from then on nothing changes. That look is start-up, not idle time.
        time.sleep(parse_duration(args.check_interval) + 2.0)
        results: dict[str, Any] = {}
        for window in [w for w in args.windows.split(",") if w]:
            if window in ("floor", "floor-kept"):
                mode = "kept" if window == "floor-kept" else "fresh"
                floor = floor_process(host, parse_duration(args.check_interval), mode)
                time.sleep(parse_duration(args.check_interval) + 1.0)  # its start-up is not idle time
                try:
                    results[window] = measure(floor.pid, args.seconds)
                finally:
                    floor.kill()
                    floor.wait()
                continue
            if window == "neighbour":
                neighbour = subprocess.Popen(
                    [sys.executable, "-c", NEIGHBOUR, str(args.neighbour_hz), args.neighbour_mode,
                     str(host.etc), str(host.pki_dir)]
                )  # fmt: skip
                time.sleep(0.5)
            results[window] = measure(host.pid, args.seconds)
            if neighbour is not None:
                neighbour.terminate()
                neighbour.wait()
                neighbour = None
            host.wait(lambda: True, timeout=1, what="the monitor still running")
        view = footprint(host.pid)
        what = {
            "quiet": "idle, nothing else touching its directories",
            "neighbour": f"idle, neighbour {args.neighbour_mode} at {args.neighbour_hz:g} Hz",
            "floor": "floor: bare python, the two GETs, new connections",
            "floor-kept": "floor: bare python, the two GETs, kept connections",
        }
        source = "stats page, admin socket hidden" if args.layout == "pod" else "admin socket"
        print(
            f"monitor, steering on, check interval {args.check_interval}, {host.template_name}, {source}, "
            f"windows of {args.seconds:g} s:"
        )
        print(f"  {'window':52} {'CPU-s/min':>10} {'(ticks)':>8} {'wake-ups/min':>13}")
        for window, r in results.items():
            mark = "" if r["precise"] else "*"
            print(
                f"  {what.get(window, window):52} {r['cpu_s_per_min']:9.4f}{mark:1} "
                f"{r['cpu_s_per_min_ticks']:8.2f} {r['wakeups_per_min']:13.0f}"
            )
        if not all(r["precise"] for r in results.values()):
            print("  * a thread or child came or went during the window: clock ticks only")
        for window, r in results.items():
            print(
                f"  per thread ({window}; by thread id, i.e. start order), wake-ups/min | CPU ms/min | sleeps in:"
            )
            for t in r["threads"]:
                print(f"    {t['tid']:>8} {t['wakeups']:8.0f} {t['cpu_ms']:8.2f}  {t['wchan']}")
        print(f"  {view.row()}")
        if args.json:
            print(json.dumps({"windows": results, "process": view.__dict__}))
        errors = host.error_lines()
        if errors:
            print(f"  the monitor logged {len(errors)} error lines; first: {errors[0]}")
        return 0
    except HostError as exc:
        print(f"bench_idle: {exc}", file=sys.stderr)
        return 1
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()
        host.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0, help="length of each idle window")
    ap.add_argument(
        "--windows", default="quiet,neighbour", help="in order: quiet, neighbour, floor, floor-kept"
    )
    ap.add_argument("--neighbour-hz", type=float, default=20.0)
    ap.add_argument("--neighbour-mode", choices=("inplace", "rename"), default="inplace")
    ap.add_argument("--check-interval", default="6s")
    ap.add_argument(
        "--layout",
        choices=("pod", "socket"),
        default="pod",
        help="pod: the static pod's view (Go template, no admin socket: stats from the stats page); "
        "socket: the Jinja2 template and HAProxy's admin socket",
    )
    ap.add_argument("--template", default="", help="a template in templates/ (default: by --layout)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if in_private_netns():
        return inner(args)
    # Steering installs real NAT rules: only ever in a namespace of our own.
    return reexec_in_private_netns([str(Path(__file__).resolve()), *sys.argv[1:]])


if __name__ == "__main__":
    raise SystemExit(main())
