"""Benchmarks of per-server metrics: scrape time per stats source, and freshness after HAProxy starts.

Prints figures, asserts nothing. Run as root (the pod layout hides the admin socket in a mount namespace):
  .venv/bin/python bench/bench_stats.py [--scrapes 50] [--starts 5] [--backends 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from monitor.adapters.httpserver import StatusServer
from monitor.adapters.stats import SCRAPE_TIMEOUT, StatsSource, read_stats, read_stats_page
from monitor.metrics import Metrics
from monitor.model import Backend
from monitor.render import Renderer
from monitor.statsconfig import stats_endpoints
from monitor.testbed.apiserver import KubeSim
from monitor.testbed.haproxy import FakeApiServer, HaproxyLab, free_port

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO / "templates" / "openshift-haproxy.cfg.tmpl"
MASTER = {"node-role.kubernetes.io/master": ""}
ADDRESSES = ["127.0.0.11", "127.0.0.12", "127.0.0.13"]


def ms(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    median, worst = statistics.median(ordered), max(ordered)
    return f"median {median * 1000:.2f} ms, p95 {p95 * 1000:.2f} ms, max {worst * 1000:.2f} ms"


def wait(predicate: Callable[[], object], timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if predicate():
                return time.monotonic() - start
        except Exception:  # not serving yet
            pass
        time.sleep(0.002)
    raise TimeoutError(f"not reached within {timeout}s")


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return str(resp.read().decode())


def bench_scrapes(tmp: Path, *, scrapes: int, backends: int) -> None:
    with HaproxyLab(workdir=tmp / "lab", template=REFERENCE) as lab:
        servers = [
            Backend(f"master-{i}", f"127.0.{1 + i // 250}.{1 + i % 250}", 6443) for i in range(backends)
        ]
        lab.write_config(Renderer(lab.template_path).render(lab.lbconfig(servers)))
        lab.start_handler()
        lab.wait_until(lambda: len(lab.servers()) == backends, timeout=15)
        hidden = (
            tmp / "pod-view.cfg"
        )  # the config as the sidecar sees it: the admin socket's directory not shared
        hidden.write_text(
            lab.cfg_path.read_text().replace(str(lab.admin_socket), "/nonexistent/haproxy.sock")
        )
        (page,) = stats_endpoints(lab.cfg_path.read_text()).pages
        for name, source, direct in (
            ("socket", StatsSource(cfg=lab.cfg_path), lambda: read_stats(lab.admin_socket)),
            ("stats page", StatsSource(cfg=hidden), lambda: read_stats_page(page)),
        ):
            reads = []
            for _ in range(scrapes):
                t0 = time.perf_counter()
                direct()
                reads.append(time.perf_counter() - t0)
            metrics = Metrics()
            metrics.server_status(lambda s=source: s.server_states(timeout=SCRAPE_TIMEOUT))  # type: ignore[misc]
            server = StatusServer(
                listen="127.0.0.1:0",
                healthz=lambda: (True, {}),
                readyz=lambda: (True, {}),
                registry=metrics.registry,
            )
            server.start()
            try:
                times = []
                for _ in range(scrapes):
                    t0 = time.perf_counter()
                    body = get(f"{server.url}/metrics")
                    times.append(time.perf_counter() - t0)
                assert body.count("haproxy_monitor_server_up{") == backends, body
            finally:
                server.stop()
            print(f"{name}, {backends} servers: read alone {ms(reads)}")
            print(f"{name}, {backends} servers: whole /metrics scrape over {scrapes} {ms(times)}")


def bench_freshness(tmp: Path, *, starts: int) -> None:
    """Monitor first, then HAProxy: time from HAProxy's stats answering to /metrics listing every server."""
    sim = KubeSim(directory=tmp / "api").start()
    api_port = free_port()
    apis = [FakeApiServer(cert_dir=tmp / "apis", address=a, port=api_port) for a in ADDRESSES]
    for i, address in enumerate(ADDRESSES):
        sim.add_node(f"master-{i}", labels=MASTER, addresses=[("InternalIP", address)])
    kubeconfig = sim.write_kubeconfig(tmp / "kubeconfig")
    try:
        for layout in ("admin socket shared", "pod layout: only the reload socket shared"):
            figures = []
            for run in range(starts):
                work = tmp / f"fresh-{layout[:3]}-{run}"
                lab = HaproxyLab(workdir=work, template=REFERENCE)
                template = work / "haproxy.cfg.tmpl"
                template.write_text(lab.sandbox_text(REFERENCE.read_text()))
                port = free_port()
                wrap = []
                if layout.startswith("pod"):
                    wrap = ["unshare", "--mount", "--", "sh", "-c", 'mount -t tmpfs hidden "$0" && exec "$@"']
                    wrap.append(str(lab.lib_dir))
                argv = [
                    *wrap, sys.executable, "-m", "monitor", str(kubeconfig), str(template), str(lab.cfg_path),
                    "--api-vips", "127.0.0.10", "--api-port", str(api_port), "--lb-port", str(lab.lb_port),
                    "--stat-port", str(lab.stat_port), "--reload-socket", str(lab.master_socket),
                    "--fallback-server", sim.url, "--no-steering", "--listen", f"127.0.0.1:{port}",
                ]  # fmt: skip
                with open(work / "monitor.log", "w") as log:
                    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
                try:
                    wait(lambda lab=lab: lab.cfg_path.exists(), 30)
                    (page,) = stats_endpoints(lab.cfg_path.read_text()).pages
                    lab.start_handler()
                    if layout.startswith("pod"):
                        wait(lambda page=page: read_stats_page(page, timeout=1), 15)
                    else:
                        wait(lambda lab=lab: read_stats(lab.admin_socket, timeout=1), 15)
                    url = f"http://127.0.0.1:{port}/metrics"
                    figures.append(
                        wait(lambda url=url: get(url).count("haproxy_monitor_server_up{") == 3, 15)
                    )
                finally:
                    proc.kill()
                    proc.wait()
                    lab.stop()
            print(f"freshness after HAProxy starts ({layout}), {starts} starts: {ms(figures)}")
    finally:
        sim.stop()
        for api in apis:
            api.stop()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scrapes", type=int, default=50)
    ap.add_argument("--starts", type=int, default=5)
    ap.add_argument("--backends", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-stats-") as d:
        bench_scrapes(Path(d), scrapes=args.scrapes, backends=args.backends)
        if args.starts > 0:
            bench_freshness(Path(d), starts=args.starts)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
