"""The main loop: one event queue; drain, decide, act. The only place where effects are sequenced."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from monitor import discovery
from monitor.adapters.files import ConfigWriter, ValidationError, WriteError
from monitor.adapters.reloader import Reloader
from monitor.events import Connectivity, Event, HealthObserved, Objects, StatsObserved, Stop, TemplateChanged
from monitor.logs import Log
from monitor.metrics import Metrics
from monitor.model import Backend, LBConfig
from monitor.render import Renderer, RenderError
from monitor.settings import Settings
from monitor.stabilize import Hysteresis, Settle
from monitor.status import Stage, Status


# ---- effect ports (adapters implement them) -----------------------------------------------------------------
class SteeringPort(Protocol):
    def ensure(self) -> tuple[bool, str | None]: ...  # (changed, error)

    def remove(self) -> tuple[bool, str | None]: ...


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
        self.status = Status(
            metrics=self.metrics,
            clock=clock,
            wall=wall,
            check_interval=settings.check_interval,
            steering=steering is not None,
        )
        self.stopped = threading.Event()
        self._desired: LBConfig | None = None
        self._objects: tuple[Any, ...] | None = None
        self._warnings: set[str] = set()
        self._log = {
            name: Log(name)
            for name in ("discovery", "settle", "render", "write", "reload", "health", "steering", "loop")
        }
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
            self._steer(False, removed="steering rules removed on shutdown")
        self.stopped.set()

    # -- decisions ---------------------------------------------------------------------------------------------
    def _wait_time(self) -> float:
        deadlines = [d for d in (self.settle.deadline(), self.reloader.deadline()) if d is not None]
        wait = self.settings.check_interval
        if deadlines:
            wait = min(wait, max(0.0, min(deadlines) - self.clock()))
        return wait

    def _on_connectivity(self, event: Connectivity) -> None:
        self.status.connectivity(
            reachable=event.reachable, fallback=event.fallback, server=event.server, error=event.error
        )

    def _on_objects(self, event: Objects) -> None:
        self._objects = event.items
        self.status.answered(server=event.server, fallback=event.fallback)
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
            self.status.failed(Stage.LOAD, str(exc))
            return
        self._template_ok = True
        self.status.recovered(Stage.LOAD)
        self._log["render"].info(
            "template loaded", template=str(self.renderer.path), language=self.renderer.language
        )

    def _apply(self, config: LBConfig, *, reason: str, seen: float | None = None) -> None:
        """Render, write and reload; ``seen`` is when discovery saw this backend set arrive (for the latency)."""
        try:
            text = self.renderer.render(config)
        except RenderError as exc:
            self.status.failed(Stage.RENDER, str(exc))
            try:
                fallback = self.renderer.render_last_good(config)
            except RenderError:
                fallback = None
            if fallback is None:
                self.status.errors["config"] = str(exc)
                return
            text = fallback
        else:
            if self._template_ok:
                self.status.recovered(Stage.RENDER)
        try:
            changed = self.writer.write(text, mode=self.renderer.mode)
        except ValidationError as exc:
            self.status.failed(Stage.VALIDATE, str(exc))
            return
        except WriteError as exc:
            self.status.failed(Stage.WRITE, str(exc))
            return
        self.status.config_applied(config, at=self.clock(), written=changed, seen=seen)
        if changed:
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
            self.status.reloaded()
            self._log["reload"].info("reload sent", socket=str(self.reloader.socket_path))
        else:
            self.status.failed(Stage.RELOAD, self.reloader.last_error or "reload failed")

    def _on_health(self, event: HealthObserved) -> None:
        flipped = self.health.observe(event.ok)
        self.status.set_healthy(self.health.state)
        if flipped:
            self._log["health"].info(
                "HAProxy healthy" if self.health.state else "HAProxy unhealthy", reason=event.reason
            )
        if self.steering is not None:
            self._steer(self.health.state)

    def _steer(self, want: bool, *, removed: str = "rules removed") -> None:
        """Re-checked every cycle: rules present exactly while healthy (repairs external deletions)."""
        assert self.steering is not None
        changed, error = self.steering.ensure() if want else self.steering.remove()
        if error:
            self.status.failed(Stage.STEERING, error)
            return
        self.status.recovered(Stage.STEERING)
        self.status.set_steering(want)
        if changed:
            self._log["steering"].info("rules installed" if want else removed)

    def _on_stats(self, event: StatsObserved) -> None:
        # The stats reader logs which source answers, or why none does; this only follows server states.
        if event.error:
            self.status.failed(Stage.STATS, event.error)
        else:
            self.status.servers_seen(event.servers)
