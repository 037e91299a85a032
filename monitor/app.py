"""Wires the main job: builds the adapters from Settings, starts their threads, runs the loop, tears down."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from monitor.adapters.files import ConfigWriter, find_haproxy
from monitor.adapters.haproxy import SCRAPE_TIMEOUT, StatsSource
from monitor.adapters.reloader import Reloader
from monitor.events import Event, HealthObserved, StatsObserved, Stop, TemplateChanged
from monitor.logs import Log
from monitor.loop import Monitor
from monitor.metrics import Metrics
from monitor.render import Renderer
from monitor.settings import Settings

if TYPE_CHECKING:
    from monitor.adapters.nftables import SteeringResult


class _Steering:
    """Adapts NftSteering's result objects to the loop's (changed, error) port."""

    def __init__(self, settings: Settings) -> None:
        from monitor.adapters.nftables import NftSteering
        from monitor.steering.rules import SteeringSpec

        self._nft = NftSteering(
            spec=SteeringSpec(vips=settings.api_vips, api_port=settings.api_port, lb_port=settings.lb_port),
            nft_bin=settings.nft_bin,
        )
        self._log = Log("steering")

    def _report(self, result: SteeringResult) -> tuple[bool, str | None]:
        # The start-up sweep says once what it removed or could not check; the loop logs the rest.
        if result.leftovers:
            self._log.info("removed rules left by earlier monitors", removed="; ".join(result.leftovers))
        if result.warning:
            self._log.warning(result.warning)
        return result.changed, result.error

    def ensure(self) -> tuple[bool, str | None]:
        return self._report(self._nft.ensure())

    def remove(self) -> tuple[bool, str | None]:
        return self._report(self._nft.remove())


def _poll_haproxy(
    settings: Settings, post: Callable[[Event], None], stop: threading.Event, stats: StatsSource
) -> None:
    """Every check interval: one health sample and one stats read (for the state-change log), posted to the loop."""
    from monitor.adapters.haproxy import StatsUnavailable
    from monitor.adapters.health import check_health

    timeout = max(0.5, min(2.0, settings.check_interval / 2))
    while not stop.is_set():
        sample = check_health(settings.health_url, timeout=timeout)
        try:
            rows = stats.read(timeout=timeout)
        except StatsUnavailable as exc:
            observed = StatsObserved(error=str(exc))  # the source already logged it, once
        else:
            observed = StatsObserved(
                servers=tuple(
                    (s.proxy, s.server, s.status, s.check_status, s.current_sessions)
                    for s in rows
                    if s.is_server
                )
            )
        # Posted together once both are read: the loop wakes once a cycle, and not while this thread still
        # holds the interpreter for the stats read (idle CPU, issue 13).
        post(HealthObserved(ok=sample.ok, reason=sample.reason))
        post(observed)
        stop.wait(settings.check_interval)


def build_monitor(settings: Settings, *, metrics: Metrics | None = None) -> Monitor:
    from monitor.adapters.netif import local_addresses

    metrics = metrics or Metrics()
    return Monitor(
        settings=settings,
        renderer=Renderer(settings.template, language=settings.template_language),
        writer=ConfigWriter(cfg=settings.cfg, haproxy_bin=find_haproxy(settings.haproxy_bin)),
        reloader=Reloader(socket_path=settings.reload_socket, clock=time.monotonic),
        networks=local_addresses,
        metrics=metrics,
        steering=_Steering(settings) if settings.steering and not settings.once else None,
    )


def run(
    settings: Settings, *, install_signals: bool = True, ready: Callable[[Monitor], None] | None = None
) -> int:
    """The main job, until SIGTERM/SIGINT (or, with ``once``, until the first config is applied)."""
    from monitor.adapters.filewatch import FileWatcher
    from monitor.adapters.kube import KubeWatcher

    log = Log("loop")
    metrics = Metrics()
    monitor = build_monitor(settings, metrics=metrics)
    stop = threading.Event()
    watcher = KubeWatcher(
        kubeconfig=settings.kubeconfig,
        source=settings.source,
        node_selector=settings.node_selector,
        fallback_server=settings.fallback_server,
        relist_interval=settings.relist_interval,
        emit=monitor.post,
    )
    metrics.seconds_since_apply(
        lambda: time.monotonic() - (monitor.status.last_apply or monitor.status.started)
    )
    metrics.watch_counters(
        requests=lambda: float(watcher.request_count()),
        restarts=lambda: float(watcher.watch_restarts()),
    )
    stats = StatsSource(cfg=settings.cfg, socket_path=settings.stats_socket, url=settings.stats_url)
    metrics.server_status(lambda: stats.read(timeout=SCRAPE_TIMEOUT))

    def credentials_changed() -> None:
        watcher.reload_credentials()
        files.set_files(template=settings.template, credentials=_credential_files())

    def _credential_files() -> list[Path]:
        try:
            return [settings.kubeconfig, *watcher.credential_files()]
        except Exception:  # a broken kubeconfig still deserves a watch on its own path
            return [settings.kubeconfig]

    files = FileWatcher(
        on_template=lambda: monitor.post(TemplateChanged(str(settings.template))),
        on_credentials=credentials_changed,
    )
    threads = [threading.Thread(target=watcher.run, args=(stop,), name="kube-watch", daemon=True)]
    if not settings.once:
        files.set_files(template=settings.template, credentials=_credential_files())
        files.start()
        threads.append(
            threading.Thread(
                target=_poll_haproxy, args=(settings, monitor.post, stop, stats), name="poll", daemon=True
            )
        )
    server = None
    if settings.listen and not settings.once:
        from monitor.adapters.httpserver import ListenError, StatusServer

        try:
            server = StatusServer(
                listen=settings.listen,
                healthz=monitor.healthz,
                readyz=monitor.readyz,
                registry=metrics.registry,
            )
            server.start()
        except ListenError as exc:
            log.error(str(exc))
            return 2

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        monitor.post(Stop(signal.Signals(signum).name))

    if install_signals:
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    for thread in threads:
        thread.start()
    log.info(
        "started",
        kubeconfig=str(settings.kubeconfig),
        template=str(settings.template),
        cfg=str(settings.cfg),
        vips=",".join(settings.api_vips),
        source=settings.source,
    )
    if ready is not None:
        ready(monitor)
    try:
        if settings.once:
            return _run_once(monitor, settings)
        return monitor.run()
    finally:
        stop.set()
        watcher.close()
        files.stop()
        if server is not None:
            server.stop()


def _run_once(monitor: Monitor, settings: Settings) -> int:
    """``--once``: apply the first backend set without settling, deliver the reload if one is due, exit."""
    log = Log("loop")
    deadline = time.monotonic() + max(30.0, settings.check_interval * 5)
    monitor.settle = type(monitor.settle)(quiet=0.0, max_wait=0.0)

    def done() -> bool:
        s = monitor.status
        finished = s.applied is not None and not s.reload_pending
        return finished or time.monotonic() > deadline

    monitor.run(until=done)
    s = monitor.status
    if s.applied is None:
        log.error(
            "--once: no config applied", reason=s.config_error or s.api_error or "no answer from the API"
        )
        return 1
    if s.reload_pending:
        log.error("--once: config written but the reload was not delivered", reason=s.reload_error or "")
        return 1
    return 0
