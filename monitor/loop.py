"""The main loop: one event queue; drain, decide, act. The only place where effects are sequenced."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from monitor import discovery
from monitor.adapters.files import ConfigWriter, ValidationError, WriteError
from monitor.adapters.reloader import Reloader
from monitor.events import Connectivity, Event, HealthObserved, Objects, StatsObserved, Stop, TemplateChanged
from monitor.logs import Log, OnceLog
from monitor.metrics import Metrics
from monitor.model import Backend, LBConfig, ServerState
from monitor.render import Renderer, RenderError
from monitor.settings import Settings
from monitor.stabilize import Hysteresis, Settle


# ---- effect ports (adapters implement them) -----------------------------------------------------------------
class SteeringPort(Protocol):
    def ensure(self) -> tuple[bool, str | None]: ...  # (changed, error)

    def remove(self) -> tuple[bool, str | None]: ...


@dataclass
class Status:
    """What /healthz, /readyz and the demo read; written only by the loop thread."""

    started: float
    last_iteration: float
    api_reachable: bool = False
    api_fallback: bool = False
    api_server: str = ""
    api_error: str | None = None
    applied: LBConfig | None = None
    last_apply: float | None = None
    config_error: str | None = None
    template_error: str | None = None
    reload_pending: bool = False
    reload_error: str | None = None
    healthy: bool = False
    steering_active: bool = False
    steering_error: str | None = None
    stats_error: str | None = None
    servers: dict[tuple[str, str], ServerState] = field(default_factory=dict)


def backend_diff(old: Sequence[Backend], new: Sequence[Backend]) -> dict[str, list[str]]:
    """Human-readable change between two backend lists (by host and address)."""
    before = {f"{b.host}={b.address}:{b.port}" for b in old}
    after = {f"{b.host}={b.address}:{b.port}" for b in new}
    return {"added": sorted(after - before), "removed": sorted(before - after)}


class Monitor:
    """Owns the decision state and executes actions in order: render, stage+validate+rename, reload, steer."""

    def __init__(
        self,
        *,
        settings: Settings,
        renderer: Renderer,
        writer: ConfigWriter,
        reloader: Reloader,
        networks: Callable[[], Sequence[discovery.IPInterface]],
        metrics: Metrics | None = None,
        steering: SteeringPort | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.renderer = renderer
        self.writer = writer
        self.reloader = reloader
        self.networks = networks
        self.metrics = metrics or Metrics()
        self.steering = steering
        self.clock = clock
        self.wall = wall
        self.queue: queue.Queue[Event] = queue.Queue()
        self.settle: Settle[LBConfig] = Settle(quiet=settings.settle, max_wait=settings.settle_max)
        self.health = Hysteresis(on_after=settings.health_on, off_after=settings.health_off)
        now = clock()
        self.status = Status(started=now, last_iteration=now)
        self.stopped = threading.Event()
        self._desired: LBConfig | None = None
        self._objects: tuple[Any, ...] | None = None
        self._warnings: set[str] = set()
        self._log = {
            name: Log(name)
            for name in (
                "discovery",
                "settle",
                "render",
                "write",
                "reload",
                "health",
                "steering",
                "stats",
                "loop",
            )
        }
        self._config_errors = OnceLog(self._log["write"])
        self._template_errors = OnceLog(self._log["render"])
        self._reload_errors = OnceLog(self._log["reload"])
        self._steering_errors = OnceLog(self._log["steering"])
        self._template_ok = True

    # -- public -------------------------------------------------------------------------------------------------
    def post(self, event: Event) -> None:
        """Thread-safe: watcher, file watcher, health poller and signal handlers only enqueue."""
        self.queue.put(event)

    def run(self, *, until: Callable[[], bool] | None = None) -> int:
        """Block until a Stop event (or ``until()`` is true); returns the exit code."""
        self._load_template()
        while not self.stopped.is_set():
            timeout = self._wait_time()
            try:
                event: Event | None = self.queue.get(timeout=timeout)
            except queue.Empty:
                event = None
            while event is not None:
                self.handle(event)
                if self.stopped.is_set():
                    return 0
                try:
                    event = self.queue.get_nowait()
                except queue.Empty:
                    event = None
            self.tick()
            if until is not None and until():
                return 0
        return 0

    def handle(self, event: Event) -> None:
        """Feed one observation into the decision state (and act when it calls for it)."""
        match event:
            case Objects():
                self._on_objects(event)
            case Connectivity():
                self._on_connectivity(event)
            case TemplateChanged():
                self._load_template()
                if self._template_ok and self._desired is not None:
                    self._apply(self._desired, reason="template changed")
            case HealthObserved():
                self._on_health(event)
            case StatsObserved():
                self._on_stats(event)
            case Stop():
                self._log["loop"].info("stopping", reason=event.reason)
                self.shutdown()

    def tick(self) -> None:
        """Act on whatever deadline has passed: a settled backend set, a pending reload retry."""
        now = self.clock()
        self.status.last_iteration = now
        seen = self.settle.pending_since()
        due, value = self.settle.take_due(now)
        if due and value is not None:
            previous = self._desired
            self._desired = value
            diff = backend_diff(previous.backends if previous else (), value.backends)
            self._log["settle"].info(
                "backend set settled",
                backends=len(value.backends),
                added=diff["added"],
                removed=diff["removed"],
            )
            self._apply(value, reason="backends changed", seen=seen)
        self._deliver_reload()

    def shutdown(self) -> None:
        """Remove steering (traffic must not be sent to a HAProxy nobody watches) and stop."""
        if self.steering is not None:
            # Unconditional: rules may exist that this process never saw installed (a previous run's).
            changed, error = self.steering.remove()
            if error:
                self._steering_errors.error(error)
            elif changed:
                self._log["steering"].info("steering rules removed on shutdown")
            self.status.steering_active = False
        self.stopped.set()

    # -- decisions ---------------------------------------------------------------------------------------------
    def _wait_time(self) -> float:
        deadlines = [d for d in (self.settle.deadline(), self.reloader.deadline()) if d is not None]
        wait = self.settings.check_interval
        if deadlines:
            wait = min(wait, max(0.0, min(deadlines) - self.clock()))
        return wait

    def _on_connectivity(self, event: Connectivity) -> None:
        log = self._log["discovery"]
        s = self.status
        changed = (s.api_reachable, s.api_fallback, s.api_error) != (
            event.reachable,
            event.fallback,
            event.error,
        )
        s.api_reachable, s.api_fallback, s.api_server, s.api_error = (
            event.reachable,
            event.fallback,
            event.server,
            event.error,
        )
        self.metrics.fallback_active.set(1 if event.fallback else 0)
        self.metrics.api_reachable.set(1 if event.reachable else 0)
        if not changed:
            return
        if event.error:
            log.error(event.error, server=event.server, fallback=event.fallback)
        elif event.fallback:
            log.warning("API read through the localhost fallback", server=event.server)
        else:
            log.info("API reachable", server=event.server)

    def _on_objects(self, event: Objects) -> None:
        self._objects = event.items
        s = self.status
        s.api_reachable, s.api_error = True, None  # objects arrived: whoever served them answered
        if event.server:
            s.api_server, s.api_fallback = event.server, event.fallback
        self.metrics.api_reachable.set(1)
        self.metrics.fallback_active.set(1 if s.api_fallback else 0)
        self._rediscover()

    def _rediscover(self) -> None:
        if self._objects is None:
            return
        s = self.settings
        log = self._log["discovery"]
        if s.source == "endpointslices":
            found = discovery.backends_from_endpointslices(
                self._objects, vips=s.api_vips, api_port=s.api_port, topology=s.control_plane_topology
            )
        else:
            try:
                local = self.networks()
            except (
                Exception
            ) as exc:  # the adapter's own error type; keep going as a host without the VIP's subnet
                log.warning(f"cannot read local addresses: {exc}")
                local = []
            found = discovery.backends_from_nodes(
                self._objects,
                vips=s.api_vips,
                api_port=s.api_port,
                local_addresses=local,
                topology=s.control_plane_topology,
            )
        warnings = set(found.warnings)
        for warning in sorted(warnings - self._warnings):
            log.warning(warning)
        self._warnings = warnings
        config = discovery.lbconfig(
            found.backends, vips=s.api_vips, api_port=s.api_port, lb_port=s.lb_port, stat_port=s.stat_port
        )
        self.settle.observe(config, self.clock())

    def _load_template(self) -> None:
        try:
            self.renderer.load()
        except RenderError as exc:
            # The last good parse stays in use: backend changes still reach HAProxy meanwhile.
            self._template_ok = False
            self.metrics.render_errors.inc()
            self.status.template_error = str(exc)
            self._template_errors.error(str(exc))
            return
        self._template_ok = True
        self.status.template_error = None
        self._template_errors.clear("template loads again")
        self._log["render"].info(
            "template loaded", template=str(self.renderer.path), language=self.renderer.language
        )

    def _apply(self, config: LBConfig, *, reason: str, seen: float | None = None) -> None:
        """Render, write and reload; ``seen`` is when discovery saw this backend set arrive (for the latency)."""
        try:
            text = self.renderer.render(config)
        except RenderError as exc:
            self.metrics.render_errors.inc()
            self.status.template_error = str(exc)
            self._template_errors.error(str(exc))
            try:
                fallback = self.renderer.render_last_good(config)
            except RenderError:
                fallback = None
            if fallback is None:
                self.status.config_error = str(exc)
                return
            text = fallback
        else:
            if self._template_ok:
                self.status.template_error = None
                self._template_errors.clear("template renders again")
        try:
            changed = self.writer.write(text, mode=self.renderer.mode)
        except ValidationError as exc:
            self.metrics.validation_errors.inc()
            self.status.config_error = str(exc)
            self._config_errors.error(str(exc))
            return
        except WriteError as exc:
            self.metrics.write_errors.inc()
            self.status.config_error = str(exc)
            self._config_errors.error(str(exc))
            return
        self.status.config_error = None
        self._config_errors.clear("config written again after earlier failure")
        self.status.applied = config
        written = self.status.last_apply = self.clock()
        self.metrics.backends.set(len(config.backends))
        self.metrics.last_apply.set(self.wall())
        if changed:
            self.metrics.applies.inc()
            if seen is not None:
                self.metrics.apply_latency.observe(written - seen)
            self._log["write"].info(
                "config written", cfg=str(self.writer.cfg), reason=reason, backends=len(config.backends)
            )
            self.reloader.request()
            self.status.reload_pending = True
            self._deliver_reload()
        else:
            self._log["write"].info("config unchanged; no reload", cfg=str(self.writer.cfg), reason=reason)

    def _deliver_reload(self) -> None:
        outcome = self.reloader.attempt()
        if outcome is None:
            return
        if outcome:
            self.metrics.reloads.inc()
            self.status.reload_pending = False
            self.status.reload_error = None
            self._reload_errors.clear("reload socket accepts again")
            self._log["reload"].info("reload sent", socket=str(self.reloader.socket_path))
        else:
            self.metrics.reload_failures.inc()
            self.status.reload_error = self.reloader.last_error
            self._reload_errors.error(self.reloader.last_error or "reload failed")

    def _on_health(self, event: HealthObserved) -> None:
        flipped = self.health.observe(event.ok)
        self.status.healthy = self.health.state
        self.metrics.healthy.set(1 if self.health.state else 0)
        if flipped:
            self._log["health"].info(
                "HAProxy healthy" if self.health.state else "HAProxy unhealthy", reason=event.reason
            )
        self._steer()

    def _steer(self) -> None:
        """Re-checked every cycle: rules present exactly while healthy (repairs external deletions)."""
        if self.steering is None:
            return
        want = self.health.state
        changed, error = self.steering.ensure() if want else self.steering.remove()
        if error:
            self.metrics.steering_errors.inc()
            self.status.steering_error = error
            self._steering_errors.error(error)
            return
        self.status.steering_error = None
        self._steering_errors.clear("nftables works again")
        self.status.steering_active = want
        self.metrics.steering_active.set(1 if want else 0)
        if changed:
            self._log["steering"].info("rules installed" if want else "rules removed")

    def _on_stats(self, event: StatsObserved) -> None:
        # The stats reader logs which source answers, or why none does; this only follows server states.
        if event.error:
            self.status.stats_error = event.error
            return
        self.status.stats_error = None
        previous = self.status.servers
        current = {(s.proxy, s.server): s for s in event.servers}
        self._log["stats"].debug(
            "stats read", states=sorted(f"{s.server}={s.status}" for s in current.values())
        )
        for key, now in current.items():
            old = previous.get(key)
            if old is not None and old.status != now.status:
                self._log["stats"].info(
                    "server state changed",
                    proxy=now.proxy,
                    server=now.server,
                    old=old.status,
                    new=now.status,
                    check=now.check_status,
                )
        self.status.servers = current

    # -- probes ----------------------------------------------------------------------------------------------
    def healthz(self) -> tuple[bool, dict[str, object]]:
        age = self.clock() - self.status.last_iteration
        limit = max(3 * self.settings.check_interval, 10.0)
        return age <= limit, {"loop_last_iteration_age_seconds": round(age, 3), "limit_seconds": limit}

    def readyz(self) -> tuple[bool, dict[str, object]]:
        s = self.status
        checks: dict[str, object] = {
            "api": "ok" if s.api_reachable else (s.api_error or "no answer from the API yet"),
            "api_server": s.api_server,
            "api_fallback": s.api_fallback,
            "config": "ok"
            if s.applied is not None and s.config_error is None
            else (s.config_error or "no config rendered yet"),
            "template": s.template_error or "ok",
            "reload": "ok" if not s.reload_pending else (s.reload_error or "reload pending"),
            "healthy": s.healthy,
            "steering": ("off" if self.steering is None else ("active" if s.steering_active else "inactive"))
            if s.steering_error is None
            else s.steering_error,
        }
        ready = (
            s.api_reachable
            and s.applied is not None
            and s.config_error is None
            and s.template_error is None
            and not s.reload_pending
            and s.steering_error is None
        )
        return ready, checks
