"""Wires the main job: builds the adapters from Settings, starts their threads, runs the loop, tears down."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from monitor.adapters.config_writer import MAX_CONFIG_BYTES, ConfigWriter, find_haproxy
from monitor.adapters.reloader import Reloader
from monitor.adapters.runtime_api import RuntimeApi
from monitor.adapters.sdnotify import SystemdNotifier
from monitor.adapters.stats import SCRAPE_TIMEOUT, StatsSource
from monitor.events import HealthObserved, StatsObserved, TemplateChanged
from monitor.logs import Log, UnexpectedLog
from monitor.loop import Monitor
from monitor.metrics import Metrics
from monitor.ports import SteeringPort
from monitor.render import Renderer
from monitor.settings import Settings
from monitor.signals import EXIT_INTERNAL_ERROR, Stopping, StopSignals

if TYPE_CHECKING:
    from monitor.adapters.filewatch import FileWatcher
    from monitor.adapters.httpserver import StatusServer
    from monitor.adapters.kube import KubeWatcher


def _poll_haproxy(
    settings: Settings,
    post_all: Callable[[HealthObserved, StatsObserved], None],
    stop: threading.Event,
    stats: StatsSource,
    unexpected: UnexpectedLog,
) -> None:
    """Every check interval: one health sample and one stats read (for the state-change log), posted to the loop.

    An unexpected exception (a bug, not an unhealthy HAProxy) is logged with its traceback and the polling goes
    on: a dead poller would freeze the health state, and with it the steering rules.
    """
    from monitor.adapters.health import check_health
    from monitor.adapters.stats import StatsUnavailable

    timeout = max(0.5, min(2.0, settings.check_interval / 2))
    while not stop.is_set():
        try:
            sample = check_health(settings.health_url, timeout=timeout)
        except Exception as exc:
            # Counted as a failed check: steering must not outlive a health check that cannot run.
            unexpected.exception("unexpected error in the health check; counted as failed", exc)
            health = HealthObserved(ok=False, reason=f"health check raised {type(exc).__name__}: {exc}")
        else:
            health = HealthObserved(ok=sample.ok, reason=sample.reason)
        try:
            servers = stats.server_states(timeout=timeout)
        except StatsUnavailable as exc:
            observed = StatsObserved(error=str(exc))  # the source already logged it, once
        except Exception as exc:
            unexpected.exception("unexpected error reading HAProxy's statistics", exc)
            observed = StatsObserved(error=f"stats read raised {type(exc).__name__}: {exc}")
        else:
            observed = StatsObserved(servers=tuple(servers))
        # Posted together once both are read, in one call: the loop wakes once a cycle, and not while this
        # thread still holds the interpreter for the stats read (idle CPU).
        post_all(health, observed)
        stop.wait(settings.check_interval)


def _guarded(action: Callable[[], None], what: str, unexpected: UnexpectedLog) -> Callable[[], None]:
    """``action`` for an adapter thread's callback: an unexpected exception is logged, the thread goes on."""

    def call() -> None:
        try:
            action()
        except Exception as exc:
            unexpected.exception(f"unexpected error {what}; the watch goes on", exc)

    return call


def _log_thread_crashes(metrics: Metrics) -> None:
    """Any other thread that dies of an exception says so in the log, with its traceback (not bare on stderr)."""
    log = Log("loop")

    def hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is None or isinstance(args.exc_value, SystemExit):
            return
        metrics.internal_errors.inc()
        name = args.thread.name if args.thread is not None else "?"
        log.exception(f"thread {name} ended by an unexpected error", args.exc_value)

    threading.excepthook = hook


def _steering(settings: Settings) -> SteeringPort | None:
    """nftables steering, unless turned off (and never for ``--once``, which only writes the config)."""
    if not settings.steering or settings.once:
        return None
    from monitor.adapters.nftables import NftSteering
    from monitor.steering.rules import SteeringSpec

    spec = SteeringSpec(vips=settings.api_vips, api_port=settings.api_port, lb_port=settings.lb_port)
    return NftSteering(spec=spec, nft_bin=settings.nft_bin)


def _serving(settings: Settings) -> Callable[[], int | None] | None:
    """Which HAProxy serves, read on the admin socket (given, or the live config's): confirms reloads that a
    silent reload handler does not."""
    if not settings.runtime_changes:
        return None
    from monitor.adapters.runtime_api import serving_pid
    from monitor.boundedread import read_bounded
    from monitor.runtimeplan import admin_socket

    def pid() -> int | None:
        path = settings.runtime_socket
        if path is None:
            try:
                found = admin_socket(
                    read_bounded(settings.cfg, limit=MAX_CONFIG_BYTES).decode(errors="replace")
                )
            except OSError:
                return None
            path = Path(found) if found else None
        return serving_pid(path) if path is not None else None

    return pid


def build_monitor(
    settings: Settings, *, metrics: Metrics | None = None, notifier: SystemdNotifier | None = None
) -> Monitor:
    from monitor.adapters.netif import local_addresses

    metrics = metrics or Metrics()
    return Monitor(
        heartbeat=None if notifier is None else notifier.alive,
        heartbeat_every=None if notifier is None else notifier.heartbeat_every,
        settings=settings,
        renderer=Renderer(settings.template, language=settings.template_language),
        writer=ConfigWriter(cfg=settings.cfg, haproxy_bin=find_haproxy(settings.haproxy_bin)),
        reloader=Reloader(
            socket_path=settings.reload_socket, clock=time.monotonic, serving=_serving(settings)
        ),
        networks=local_addresses,
        metrics=metrics,
        steering=_steering(settings),
        runtime=RuntimeApi(drain_timeout=settings.drain_timeout) if settings.runtime_changes else None,
    )


def run(
    settings: Settings,
    *,
    install_signals: bool = True,
    ready: Callable[[Monitor], None] | None = None,
) -> int:
    """The main job until a stop signal (or, with ``once``, until the first config is applied); the exit code.

    Every way out removes the steering rules first: a stop signal (the first thing installed, so one that arrives
    while the adapters are built or the template loads is served too; monitor.signals says which signals and
    codes), the loop failing beyond its own guard (EXIT_INTERNAL_ERROR), or a start-up error. ``ready`` is
    called with the Monitor before its loop runs.
    """
    job = _Job(settings)
    try:
        if install_signals:
            StopSignals.install()
            _log_thread_crashes(job.metrics)
        return job.serve(ready=ready)
    except Stopping as stopping:
        return job.stopped(stopping)
    except BaseException as exc:  # the loop cannot go on: its own guard catches every Exception
        return job.crashed(exc)
    finally:
        job.teardown()


class _Job:
    """What the main job has started so far, so that any way out can remove the steering rules and stop it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.log = Log("loop")
        self.metrics = Metrics()
        self.monitor: Monitor | None = None
        self.looping = False
        self.stop = threading.Event()
        self.watcher: KubeWatcher | None = None
        self.files: FileWatcher | None = None
        self.server: StatusServer | None = None
        self.notifier: SystemdNotifier | None = None

    def serve(self, *, ready: Callable[[Monitor], None] | None) -> int:
        from monitor.adapters.filewatch import FileWatcher
        from monitor.adapters.kube import KubeWatcher
        from monitor.adapters.kube.client import Limits

        settings, metrics = self.settings, self.metrics
        notifier = self.notifier = SystemdNotifier.from_environ()
        monitor = self.monitor = build_monitor(settings, metrics=metrics, notifier=notifier)
        watcher = self.watcher = KubeWatcher(
            kubeconfig=settings.kubeconfig,
            source=settings.source,
            node_selector=settings.node_selector,
            fallback_server=settings.fallback_server,
            relist_interval=settings.relist_interval,
            emit=monitor.post,
            limits=Limits(rate=settings.kube_api_qps, burst=settings.kube_api_burst),
        )
        metrics.seconds_since_apply(
            lambda: time.monotonic() - (monitor.status.last_apply or monitor.status.started)
        )
        metrics.watch_counters(
            requests=lambda: float(watcher.request_count()),
            restarts=lambda: float(watcher.watch_restarts()),
        )
        stats = StatsSource(cfg=settings.cfg, socket_path=settings.stats_socket, url=settings.stats_url)
        metrics.server_status(lambda: stats.server_states(timeout=SCRAPE_TIMEOUT))

        def credentials_changed() -> None:
            watcher.reload_credentials()
            files.set_files(template=settings.template, credentials=_credential_files())

        def _credential_files() -> list[Path]:
            try:
                return [settings.kubeconfig, *watcher.credential_files()]
            except Exception:  # a broken kubeconfig still deserves a watch on its own path
                return [settings.kubeconfig]

        callbacks = UnexpectedLog(Log("files"), count=metrics.internal_errors.inc)
        files = self.files = FileWatcher(
            on_template=_guarded(
                lambda: monitor.post(TemplateChanged(str(settings.template))),
                "on a template change",
                callbacks,
            ),
            on_credentials=_guarded(credentials_changed, "reloading the credentials", callbacks),
        )
        threads = [threading.Thread(target=watcher.run, args=(self.stop,), name="kube-watch", daemon=True)]
        if not settings.once:
            files.set_files(template=settings.template, credentials=_credential_files())
            files.start()
            poller = UnexpectedLog(Log("health"), count=metrics.internal_errors.inc)
            threads.append(
                threading.Thread(
                    target=_poll_haproxy,
                    args=(settings, monitor.post_all, self.stop, stats, poller),
                    name="poll",
                    daemon=True,
                )
            )
        if settings.listen and not settings.once:
            from monitor.adapters.httpserver import ListenError, StatusServer

            try:
                self.server = StatusServer(
                    listen=settings.listen,
                    healthz=monitor.status.healthz,
                    readyz=monitor.status.readyz,
                    registry=metrics.registry,
                )
                self.server.start()
            except ListenError as exc:
                self.log.error(str(exc))
                self.remove_steering()
                return 2
        for thread in threads:
            thread.start()
        self.log.info(
            "started",
            kubeconfig=str(settings.kubeconfig),
            template=str(settings.template),
            cfg=str(settings.cfg),
            vips=",".join(settings.api_vips),
            source=settings.source,
        )
        if ready is not None:
            ready(monitor)
        if notifier is not None:  # Type=notify: ready once the adapters run; the loop then feeds the watchdog
            notifier.ready(status=f"watching {settings.source}, writing {settings.cfg}")
        self.looping = True
        if settings.once:
            return _run_once(monitor, settings)
        return monitor.run()

    def stopped(self, stopping: Stopping) -> int:
        """A stop signal: the steering rules removed, then the signal's exit code."""
        during = {} if self.looping else {"during": "start-up"}
        self.log.info("stopping", reason=stopping.name, exit_code=stopping.code, **during)
        self.remove_steering()
        return stopping.code

    def crashed(self, exc: BaseException) -> int:
        self.log.exception(
            "the loop cannot go on; removing the steering rules and exiting",
            exc,
            exit_code=EXIT_INTERNAL_ERROR,
        )
        self.remove_steering()
        return EXIT_INTERNAL_ERROR

    def remove_steering(self) -> None:
        """No traffic may stay steered into a HAProxy nobody watches, whatever rules exist (a previous run's too)."""
        if self.monitor is not None:
            try:
                self.monitor.shutdown()
                return
            except Exception as exc:
                self.log.exception(
                    "removing the steering rules through the loop failed; removing directly", exc
                )
        remove_steering(self.settings)

    def teardown(self) -> None:
        if self.notifier is not None:
            self.notifier.stopping()
        self.stop.set()
        if self.watcher is not None:
            self.watcher.close()
        if self.files is not None:
            self.files.stop()
        if self.server is not None:
            self.server.stop()


def remove_steering(settings: Settings) -> None:
    """Remove the steering rules without a loop (a stop before it exists); one log line says what happened."""
    steering = _steering(settings)
    if steering is None:
        return
    result = steering.remove()
    log = Log("steering")
    if result.error:
        log.error(result.error)
    elif result.changed:
        log.info("steering rules removed on shutdown")


def _run_once(monitor: Monitor, settings: Settings) -> int:
    """``--once``: apply the first backend set (the monitor does not settle it), deliver its reload, exit."""
    log = Log("loop")
    deadline = time.monotonic() + max(30.0, settings.check_interval * 5)

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
