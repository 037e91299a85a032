"""Benchmarks of the main job against the simulated API and a real HAProxy; prints figures, asserts nothing.

Run: .venv/bin/python bench/bench_main.py [--changes 20] [--idle-seconds 60]
"""

from __future__ import annotations

import argparse
import ipaddress
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from monitor.discovery import backends_from_nodes, lbconfig
from monitor.model import Backend
from monitor.render import Renderer
from monitor.report import backend_diff
from monitor.testbed.apiserver import KubeSim
from monitor.testbed.haproxy import FakeApiServer, HaproxyLab, free_port

REPO = Path(__file__).resolve().parent.parent
MASTER = {"node-role.kubernetes.io/master": ""}


def proc_stat(pid: int) -> tuple[float, int]:
    """(CPU seconds user+system, peak RSS in kB) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    import os

    cpu = ticks / os.sysconf("SC_CLK_TCK")
    hwm = next(
        int(line.split()[1])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmHWM")
    )
    return cpu, hwm


def served(lab: HaproxyLab) -> dict[str, str]:
    for _ in range(100):
        try:
            return {n: s.address.rsplit(":", 1)[0] for n, s in lab.servers().items()}
        except OSError:
            time.sleep(0.01)
    return {}


def wait(pred, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if pred():
            return time.monotonic() - start
        time.sleep(0.005)
    return float("inf")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bench_render(n: int = 5000, rounds: int = 15) -> None:
    nodes = [
        {
            "metadata": {"name": f"master-{i}"},
            "status": {
                "addresses": [{"type": "InternalIP", "address": str(ipaddress.ip_address("10.0.0.0") + i)}]
            },
        }
        for i in range(n)
    ]
    local = [ipaddress.ip_interface("10.255.255.1/8")]
    vips = ["10.255.255.254"]
    discover = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        found = backends_from_nodes(nodes, vips=vips, api_port=6443, local_addresses=local)
        discover.append(time.perf_counter() - t0)
    cfg = lbconfig(found.backends, vips=vips, api_port=6443, lb_port=9445, stat_port=29445)
    shifted = (*cfg.backends[1:], Backend("new", "10.200.0.1", 6443))
    diffs = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        backend_diff(cfg.backends, shifted)
        diffs.append(time.perf_counter() - t0)
    print(f"discovery of {n} nodes: median {statistics.median(discover) * 1000:.1f} ms")
    print(f"diff of two {n}-backend lists: median {statistics.median(diffs) * 1000:.1f} ms")
    for name in ("haproxy.cfg.j2", "haproxy.cfg.tmpl", "openshift-haproxy.cfg.tmpl"):
        renderer = Renderer(REPO / "templates" / name)
        renderer.load()
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            renderer.render(cfg)
            backend_diff(cfg.backends, shifted)
            times.append(time.perf_counter() - t0)
        print(f"render+diff {n} backends ({name}): median {statistics.median(times) * 1000:.1f} ms")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--changes", type=int, default=20)
    ap.add_argument("--idle-seconds", type=float, default=60.0)
    ap.add_argument("--flap-seconds", type=float, default=12.0)
    ap.add_argument("--template", default="haproxy.cfg.j2", help="a template in templates/ (.tmpl = Go)")
    args = ap.parse_args()
    bench_render()
    with tempfile.TemporaryDirectory(prefix="bench-main-") as d:
        tmp = Path(d)
        sim = KubeSim(directory=tmp / "api").start()
        api_port = free_port()
        spare = [f"127.0.1.{i}" for i in range(1, 40)]
        apis = [
            FakeApiServer(cert_dir=tmp / "apis", address=a, port=api_port)
            for a in ["127.0.0.11", "127.0.0.12", "127.0.0.13", *spare]
        ]
        for i, a in enumerate(["127.0.0.11", "127.0.0.12", "127.0.0.13"]):
            sim.add_node(f"master-{i}", labels=MASTER, addresses=[("InternalIP", a)])
        lab = HaproxyLab(workdir=tmp / "haproxy", template=REPO / "templates" / args.template)
        lab.start_handler()
        kubeconfig = sim.write_kubeconfig(tmp / "kubeconfig")
        log_path = tmp / "monitor.log"
        log = open(log_path, "w")  # noqa: SIM115
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "monitor", str(kubeconfig), str(lab.template_path), str(lab.cfg_path),
                "--api-vips", "127.0.0.10", "--api-port", str(api_port), "--lb-port", str(lab.lb_port),
                "--stat-port", str(lab.stat_port), "--reload-socket", str(lab.master_socket),
                "--stats-socket", str(lab.admin_socket), "--fallback-server", sim.url, "--no-steering",
                "--health-url", f"http://127.0.0.1:{lab.monitor_port}/haproxy_monitor",
                "--listen", f"127.0.0.1:{free_port()}",
            ],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            t = wait(lambda: len(served(lab)) == 3, 30)
            print(f"start to first config served: {t:.2f} s")
            latencies = []
            for i in range(args.changes):
                address = spare[i % len(spare)]
                t0 = time.monotonic()
                sim.update_node("master-0", addresses=[("InternalIP", address)])
                latencies.append(wait(lambda a=address: served(lab).get("master-0") == a, 15))
                time.sleep(0.2)
            print(
                f"node change → HAProxy serving it over {len(latencies)} changes: p50 {pct(latencies, 0.5):.2f} s, "
                f"p95 {pct(latencies, 0.95):.2f} s, max {max(latencies):.2f} s"
            )
            time.sleep(3)
            toggles = int(args.flap_seconds * 2)

            def flap(a: str, b: str, what: str) -> None:
                """Toggle master-1 between two addresses every 0.5 s (a 1 Hz flap) and count the reloads."""
                before = log_path.read_text().count("reload sent")
                for i in range(toggles):
                    sim.update_node("master-1", addresses=[("InternalIP", a if i % 2 == 0 else b)])
                    time.sleep(0.5)
                time.sleep(5)
                reloads = log_path.read_text().count("reload sent") - before
                print(
                    f"reloads caused by a {args.flap_seconds:.0f} s 1 Hz flap {what} ({toggles} toggles): {reloads}"
                )

            flap("127.0.1.39", "127.0.0.12", "away from and back to the served address")
            flap("127.0.1.38", "127.0.1.37", "between two new addresses")  # never returns to the served one
            time.sleep(2)
            req0 = sim.request_count()
            cpu0, _ = proc_stat(proc.pid)
            time.sleep(args.idle_seconds)
            cpu1, hwm = proc_stat(proc.pid)
            reqs = sim.request_count() - req0
            per_min = 60.0 / args.idle_seconds
            print(f"API requests per idle minute: {reqs * per_min:.2f} (over {args.idle_seconds:.0f} s)")
            print(f"idle CPU seconds per minute: {(cpu1 - cpu0) * per_min:.3f}")
            print(f"peak RSS of the monitor process: {hwm / 1024:.1f} MB")
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(10)
            print(f"SIGTERM to exit: {time.monotonic() - t0:.3f} s (exit code {rc})")
        finally:
            if proc.poll() is None:
                proc.kill()
            lab.stop()
            sim.stop()
            for api in apis:
                api.stop()
            errors = [line for line in log_path.read_text().splitlines() if re.search(r" error ", line)]
            if errors:
                print(f"monitor logged {len(errors)} error lines; first: {errors[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
