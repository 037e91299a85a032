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

Run: .venv/bin/python bench/bench_idle.py [--seconds 60] [--layout pod|socket] [--neighbour-hz 20]
     [--neighbour-mode inplace|rename]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
MASTER = {"node-role.kubernetes.io/master": ""}
VIP = "127.0.0.10"
BACKENDS = ("127.0.0.11", "127.0.0.12", "127.0.0.13")

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


def clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if int(_stat_fields(int(entry))[1]) == pid:
                    found.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return found


def _tree(pid: int) -> list[int]:
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        pending.extend(_children(current))
    return found


def tree_cpu(pid: int) -> tuple[float, frozenset[tuple[int, int]]]:
    """CPU seconds of *pid* and its descendants, and the (process, thread) ids it was summed over.

    Live threads count with the scheduler's nanosecond runtime (``/proc/P/task/T/schedstat``); children
    already reaped (``nft`` runs) with their cutime+cstime ticks. A thread that ended in between is missing
    from the second sum: measure() then falls back to utime+stime ticks, which keep it.
    """
    seconds, tasks = 0.0, set()
    for proc in _tree(pid):
        try:
            fields = _stat_fields(proc)
            seconds += (int(fields[13]) + int(fields[14])) / clock_ticks()  # cutime, cstime
            for tid in os.listdir(f"/proc/{proc}/task"):
                seconds += int(Path(f"/proc/{proc}/task/{tid}/schedstat").read_text().split()[0]) / 1e9
                tasks.add((proc, int(tid)))
        except OSError:
            continue
    return seconds, frozenset(tasks)


def tree_ticks(pid: int) -> float:
    """CPU seconds of the tree from utime+stime+cutime+cstime, in clock ticks (10 ms)."""
    ticks = 0
    for proc in _tree(pid):
        try:
            ticks += sum(int(v) for v in _stat_fields(proc)[11:15])  # fields 14-17 of proc(5)
        except OSError:
            continue
    return ticks / clock_ticks()


def status_value(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def thread_counters(pid: int) -> dict[int, tuple[int, float, str]]:
    """Per thread id: context switches (voluntary + involuntary: each is a wake-up), CPU seconds, and wchan
    (the kernel function it sleeps in: futex_wait for a lock/queue/event, do_sys_poll, sock recv, ...)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        base = Path(f"/proc/{pid}/task/{tid}")
        try:
            text = (base / "status").read_text()
            runtime = int((base / "schedstat").read_text().split()[0]) / 1e9
            wchan = (base / "wchan").read_text().strip()
        except OSError:
            continue
        switches = sum(
            int(line.split()[1]) for line in text.splitlines() if line.split(":")[0].endswith("ctxt_switches")
        )
        out[int(tid)] = (switches, runtime, wchan)
    return out


def process_view(pid: int) -> dict[str, Any]:
    return {
        "rss_mb": status_value(pid, "VmRSS") / 1024,
        "peak_rss_mb": status_value(pid, "VmHWM") / 1024,
        "threads": status_value(pid, "Threads"),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }


def wait_for(predicate: Callable[[], bool], *, timeout: float, what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if predicate():
                return time.monotonic() - start
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")


def steering_rules() -> int:
    done = subprocess.run(
        ["nft", "-j", "list", "table", "ip", "ocp_nat"], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        return 0
    items = json.loads(done.stdout).get("nftables", [])
    return sum(1 for i in items if isinstance(i, dict) and "rule" in i)


def measure(pid: int, seconds: float) -> dict[str, Any]:
    (cpu0, tasks0), ticks0, threads0 = tree_cpu(pid), tree_ticks(pid), thread_counters(pid)
    time.sleep(seconds)
    (cpu1, tasks1), ticks1, threads1 = tree_cpu(pid), tree_ticks(pid), thread_counters(pid)
    per_min = 60.0 / seconds
    per_thread = []
    for tid, (switches, runtime, wchan) in sorted(threads1.items()):
        s0, r0, _ = threads0.get(tid, (0, 0.0, ""))
        wakes, cpu_ms = (switches - s0) * per_min, (runtime - r0) * per_min * 1000
        per_thread.append({"tid": tid, "wakeups": wakes, "cpu_ms": cpu_ms, "wchan": wchan})
    precise = tasks0 == tasks1
    return {
        "cpu_s_per_min": ((cpu1 - cpu0) if precise else (ticks1 - ticks0)) * per_min,
        "cpu_s_per_min_ticks": (ticks1 - ticks0) * per_min,
        "precise": precise,
        "wakeups_per_min": sum(t["wakeups"] for t in per_thread),
        "threads": per_thread,
    }


def inner(args: argparse.Namespace) -> int:
    """Inside the private network namespace: set everything up, converge, measure, print."""
    from monitor.settings import parse_duration
    from monitor.testbed import pki
    from monitor.testbed.apiserver import KubeSim
    from monitor.testbed.haproxy import FakeApiServer, HaproxyLab, free_port

    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-idle-"))
    procs: list[subprocess.Popen[bytes]] = []
    sim = KubeSim(directory=tmp / "api").start()
    apis: list[FakeApiServer] = []
    lab: HaproxyLab | None = None
    try:
        api_port = free_port()
        apis = [FakeApiServer(cert_dir=tmp / "apis", address=a, port=api_port) for a in BACKENDS]
        for i, address in enumerate(BACKENDS):
            sim.add_node(f"master-{i}", labels=MASTER, addresses=[("InternalIP", address)])
        shared, pki_dir = tmp / "etc", tmp / "kubelet-pki"
        shared.mkdir()
        kubelet = pki.make_kubelet_pki(pki_dir, ca=sim.ca, user="monitor")
        kubeconfig = pki.write_kubeconfig(
            shared / "kubeconfig",
            server=sim.url,
            ca_cert=sim.ca.cert,
            client_cert_file=kubelet.current,
            client_key_file=kubelet.current,
        )
        template_name = args.template or ("haproxy.cfg.tmpl" if args.layout == "pod" else "haproxy.cfg.j2")
        lab = HaproxyLab(workdir=tmp / "haproxy", template=REPO / "templates" / template_name)
        lab.start_handler()
        template = shared / template_name
        shutil.copyfile(lab.template_path, template)
        log_path = tmp / "monitor.log"
        # The static pod shares /var/run/haproxy and /etc/haproxy with HAProxy, not its admin socket's directory:
        # hide that one under a tmpfs in the monitor's own mount namespace (exec keeps the PID).
        hide = [
            "unshare",
            "--mount",
            "--",
            "sh",
            "-c",
            'mount -t tmpfs hidden "$0" && exec "$@"',
            str(lab.lib_dir),
        ]
        with open(log_path, "wb") as log:
            monitor = subprocess.Popen(
                [
                    *(hide if args.layout == "pod" else []),
                    sys.executable, "-m", "monitor", str(kubeconfig), str(template), str(lab.cfg_path),
                    "--api-vips", VIP, "--api-port", str(api_port), "--lb-port", str(lab.lb_port),
                    "--stat-port", str(lab.stat_port), "--reload-socket", str(lab.master_socket),
                    "--check-interval", args.check_interval, "--fallback-server", sim.url,
                    "--health-url", f"http://127.0.0.1:{lab.monitor_port}/haproxy_monitor",
                    "--listen", f"127.0.0.1:{free_port()}",
                ],
                stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
            )  # fmt: skip
        procs.append(monitor)

        def served() -> bool:
            return {s.address.rsplit(":", 1)[0] for s in lab.servers().values()} == set(BACKENDS)

        t_served = wait_for(served, timeout=60, what="HAProxy serving the three backends")
        t_steered = wait_for(lambda: steering_rules() == 2, timeout=120, what="the steering rules")
        print(f"start → backends served {t_served:.1f} s, → steering rules installed {t_steered:.1f} s")
        # Converged: the cycle after the install looks at the rules once more (the kernel reported our own
        # change); from then on nothing changes. That look is start-up, not idle time.
        time.sleep(parse_duration(args.check_interval) + 2.0)
        windows = [w for w in args.windows.split(",") if w]
        results: dict[str, Any] = {}
        for window in windows:
            neighbour = None
            if window == "neighbour":
                neighbour = subprocess.Popen(
                    [sys.executable, "-c", NEIGHBOUR, str(args.neighbour_hz), args.neighbour_mode,
                     str(shared), str(pki_dir)]
                )  # fmt: skip
                procs.append(neighbour)
                time.sleep(0.5)
            results[window] = measure(monitor.pid, args.seconds)
            if neighbour is not None:
                neighbour.terminate()
                neighbour.wait()
            if monitor.poll() is not None:
                raise SystemExit(f"the monitor exited ({monitor.returncode}); log:\n{log_path.read_text()}")
        view = process_view(monitor.pid)
        what = {
            "quiet": "idle, nothing else touching its directories",
            "neighbour": f"idle, neighbour {args.neighbour_mode} at {args.neighbour_hz:g} Hz",
        }
        source = "stats page, admin socket hidden" if args.layout == "pod" else "admin socket"
        print(
            f"monitor, steering on, check interval {args.check_interval}, {template_name}, {source}, "
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
        print(
            f"  RSS {view['rss_mb']:.1f} MB, peak RSS {view['peak_rss_mb']:.1f} MB, "
            f"{view['threads']} threads, {view['fds']} open fds"
        )
        if args.json:
            print(json.dumps({"windows": results, "process": view}))
        errors = [line for line in log_path.read_text().splitlines() if " error " in line]
        if errors:
            print(f"  the monitor logged {len(errors)} error lines; first: {errors[0]}")
        return 0
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        if lab is not None:
            lab.stop()
        for api in apis:
            api.stop()
        sim.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0, help="length of each idle window")
    ap.add_argument("--windows", default="quiet,neighbour", help="windows to measure, in order")
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
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inner:
        return inner(args)
    # Steering installs real NAT rules: only ever in a namespace of our own.
    argv = ["unshare", "-n", sys.executable, str(Path(__file__).resolve()), "--inner", *sys.argv[1:]]
    return subprocess.run(argv, cwd=REPO, check=False).returncode


if __name__ == "__main__":
    raise SystemExit(main())
