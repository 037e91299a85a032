"""A burst of API events costs one rediscovery: 500 full sets of 5,000 nodes posted to a running Monitor.

The Monitor runs as in production (its loop on a thread, the real clock, the default settle window, real
rendering and atomic writes, its /healthz served over HTTP); the test plays the kube watcher, which posts the
full set after every change. ``haproxy -c`` is left out: its CPU time (1.5 s for 5,000 servers here, over 10 s
on a CI box whose cores are both busy) is HAProxy's, not the loop's; tests/test_loop_e2e.py runs it. Figures
are printed (``-s``).
"""

from __future__ import annotations

import http.client
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from monitor.adapters.config_writer import ConfigWriter
from monitor.adapters.httpserver import StatusServer
from monitor.adapters.reloader import Reloader
from monitor.discovery import IPInterface
from monitor.events import Objects, Stop
from monitor.loop import Monitor
from monitor.render import Renderer
from monitor.settings import Settings

REPO = Path(__file__).resolve().parent.parent
NODES, UPDATES = 5000, 500


def node(i: int, *, net: int = 0) -> dict[str, Any]:
    return {
        "metadata": {"name": f"master-{i}", "labels": {"node-role.kubernetes.io/master": ""}},
        "status": {"addresses": [{"type": "InternalIP", "address": f"10.{net}.{i >> 8}.{i & 255}"}]},
    }


def wait_until(predicate: Callable[[], object], *, timeout: float, what: str) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_500_updates_of_5000_nodes_cost_one_rediscovery_keep_healthz_up_and_a_stop_goes_first(
    tmp_path: Path,
) -> None:
    template = tmp_path / "haproxy.cfg.j2"
    shutil.copy(REPO / "templates" / "haproxy.cfg.j2", template)
    cfg = tmp_path / "haproxy.cfg"
    # The defaults that matter here: settle 1.5 s, settle-max 10 s; /healthz allows 10 s without a loop pass.
    settings = Settings(
        kubeconfig=tmp_path / "kubeconfig",
        template=template,
        cfg=cfg,
        api_vips=("192.0.2.10",),
        reload_socket=tmp_path / "none.sock",
        check_interval=1.0,
    )
    rediscoveries: list[float] = []

    def networks() -> list[IPInterface]:  # read once per rediscovery: it counts them
        rediscoveries.append(time.monotonic())
        return []

    monitor = Monitor(
        settings=settings,
        renderer=Renderer(template),
        writer=ConfigWriter(cfg=cfg, haproxy_bin=None),
        reloader=Reloader(socket_path=settings.reload_socket, clock=time.monotonic),
        networks=networks,
    )
    server = StatusServer(
        listen="127.0.0.1:0",
        healthz=monitor.status.healthz,
        readyz=monitor.status.readyz,
        registry=monitor.metrics.registry,
    )
    server.start()
    loop = threading.Thread(target=monitor.run, name="loop", daemon=True)
    loop.start()
    nodes = [node(i) for i in range(NODES)]
    try:
        monitor.post(Objects(tuple(nodes)))
        wait_until(
            lambda: monitor.status.applied is not None, timeout=60, what="the first 5,000-server config"
        )
        healthz: list[int] = []
        polling = threading.Event()

        def poll() -> None:
            while not polling.is_set():
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
                conn.request("GET", "/healthz")
                healthz.append(conn.getresponse().status)
                conn.close()
                polling.wait(0.1)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        before = len(rediscoveries)
        for k in range(UPDATES):  # the watcher posts the full set after each change
            nodes[k] = node(k, net=1)
            monitor.post(Objects(tuple(nodes)))
        posted = time.monotonic()
        last = f"10.1.{(UPDATES - 1) >> 8}.{(UPDATES - 1) & 255}:6443"
        bound = settings.settle + settings.settle_max
        landed = wait_until(
            lambda: last in cfg.read_text(), timeout=bound + 5, what="the last update in haproxy.cfg"
        )
        polling.set()
        poller.join(10)
        took = landed - posted
        burst = len(rediscoveries) - before
        print(
            f"\n500 updates of 5,000 nodes: {burst} rediscoveries, last update in haproxy.cfg after {took:.2f}s"
        )
        assert took <= bound, f"applied {took:.2f}s after the burst; settle + settle-max is {bound}s"
        assert burst <= 3, f"{burst} rediscoveries for one burst: queued sets must coalesce to the newest"
        assert healthz and set(healthz) == {200}, f"/healthz answered {sorted(set(healthz))} during the work"
        # A Stop queued behind another burst goes first: at most the rediscovery already running finishes.
        for k in range(UPDATES):
            nodes[k] = node(k, net=2)
            monitor.post(Objects(tuple(nodes)))
        stop_at = time.monotonic()
        monitor.post(Stop("SIGTERM"))
        loop.join(30)
        stopped = time.monotonic() - stop_at
        print(f"Stop behind 500 queued sets served in {stopped:.3f}s")
        assert not loop.is_alive(), "the Stop was not served"
        later = [t for t in rediscoveries if t > stop_at]
        assert not later, f"{len(later)} rediscoveries started after the Stop was queued"
    finally:
        monitor.post(Stop("test over"))
        loop.join(10)
        server.stop()
