"""The main loop: one event queue; drain, decide, act. The only place where effects are sequenced."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from monitor import discovery
from monitor.backendset import BackendSet
from monitor.events import Connectivity, Event, HealthObserved, Objects, StatsObserved, Stop, TemplateChanged
from monitor.inbox import Inbox
from monitor.logs import Log, UnexpectedLog
from monitor.metrics import Metrics
from monitor.model import Backend, LBConfig
from monitor.pipeline import ApplyResult, Pipeline, ReloadResult, RuntimeResult
from monitor.ports import (
    ConfigWriterPort,
    ReloaderPort,
    RuntimePort,
    SteeringPort,
    SteeringResult,
    TemplatePort,
)
from monitor.settings import Settings
from monitor.stabilize import Backoff, Hysteresis, Settle
from monitor.status import Stage, Status

# A failed write (read-only or full file system, no descriptor left) is tried again after 0.5 s, doubling up
# to 30 s, until it lands: the change is never dropped to wait for some unrelated event.
WRITE_RETRY_FIRST, WRITE_RETRY_CAP = 0.5, 30.0
# After a tick that raised, the loop waits at least this long: a deadline the failure left in the past must
# not turn the loop into a spin.
PAUSE_AFTER_ERROR = 0.5
LOGGED_CHANGES = 20  # backends named per direction in the "backend set settled" line


def backend_diff(old: Sequence[Backend], new: Sequence[Backend]) -> dict[str, list[str]]:
    """Human-readable change between two backend lists (by host and address)."""
    before = {f"{b.host}={b.address}:{b.port}" for b in old}
    after = {f"{b.host}={b.address}:{b.port}" for b in new}
    return {"added": sorted(after - before), "removed": sorted(before - after)}


def _capped(items: list[str], limit: int = LOGGED_CHANGES) -> list[str]:
    """At most ``limit`` items, then how many more: a log line stays a line with 5,000 backends too."""
    return items if len(items) <= limit else [*items[:limit], f"... and {len(items) - limit} more"]


class Report:
    """What each outcome the loop sequences means for the status, the metrics and the log (one line per event)."""

    def __init__(self, status: Status, *, cfg: Path, socket: Path) -> None:
        self.status = status
        self._cfg, self._socket = str(cfg), str(socket)
        self._warnings: set[str] = set()
        self._socket_unreachable = False
        self._unconfirmed_said = False
        subsystems = ("discovery", "settle", "render", "write", "reload", "health", "steering", "loop")
        self.log = {name: Log(name) for name in subsystems}
        self.unexpected = UnexpectedLog(self.log["loop"], count=status.metrics.internal_errors.inc)

    def guarded(self, what: str, action: Callable[..., None], *args: Any) -> bool:
        """Run one unit of the loop's work; False when it raised (logged with its traceback, counted)."""
        try:
            action(*args)
        except Exception as exc:
            self.unexpected.exception(f"unexpected error {what}; state kept, the loop goes on", exc)
            return False
        return True

    def local_addresses_failed(self, error: Exception) -> None:
        self.log["discovery"].warning(f"cannot read local addresses: {error}")

    def discovered(self, warnings: Sequence[str]) -> None:
        """Each discovery warning once, for as long as it holds."""
        for warning in sorted(set(warnings) - self._warnings):
            self.log["discovery"].warning(warning)
        self._warnings = set(warnings)

    def backends_listed(self, count: int, *, kept: int) -> None:
        """Discovery found ``count`` backends; none while ``kept`` are served is refused, logged once."""
        refusing = count == 0
        if refusing and self.status.empty_refused is None:
            self.log["discovery"].warning(
                "the API lists no usable backend; keeping the last backend set", kept=kept
            )
        elif not refusing and self.status.empty_refused is not None:
            self.log["discovery"].info("the API lists backends again", backends=count)
        self.status.refusing_empty(kept if refusing else None)

    def settled(self, previous: LBConfig | None, value: LBConfig) -> None:
        diff = backend_diff(previous.backends if previous else (), value.backends)
        self.log["settle"].info(
            "backend set settled",
            backends=len(value.backends),
            added=_capped(diff["added"]),
            removed=_capped(diff["removed"]),
        )

    def template_loaded(self, error: str | None, template: TemplatePort) -> None:
        if error is not None:
            # The last good parse stays in use: backend changes still reach HAProxy meanwhile.
            self.status.failed(Stage.LOAD, error)
            return
        self.status.recovered(Stage.LOAD)
        self.log["render"].info("template loaded", template=str(template.path), language=template.language)

    def applied(
        self, config: LBConfig, result: ApplyResult, *, reason: str, seen: float | None, template_loaded: bool
    ) -> None:
        """``seen``: when discovery saw this backend set (for the latency); ``template_loaded``: the file parses."""
        if result.render_error is not None:
            self.status.failed(Stage.RENDER, result.render_error)
        elif template_loaded:
            self.status.recovered(Stage.RENDER)
        if result.stage_failed is Stage.RENDER:
            self.status.errors["config"] = result.error  # nothing to write: the config check says why
            return
        if result.stage_failed is not None:
            self.status.failed(result.stage_failed, result.error or "")
            if result.reload is not None:  # servers were changed at runtime: HAProxy goes back to the file
                self.status.reload_pending = True
                self.reload(result.reload)
            return
        assert result.applied_at is not None
        self.status.config_applied(config, at=result.applied_at, written=result.written, seen=seen)
        if result.unchanged:
            self.log["write"].info("config unchanged; no reload", cfg=self._cfg, reason=reason)
            return
        self.log["write"].info("config written", cfg=self._cfg, reason=reason, backends=len(config.backends))
        if result.runtime is not None:
            self.runtime(result.runtime)
            if result.runtime.applied:
                return
        if result.state_error is not None:
            self.log["reload"].info(
                "server state not saved; health checks start over", detail=result.state_error
            )
        self.status.reload_pending = True
        self.reload(result.reload)

    def confirmation(self, answer: str | None) -> None:
        """What the reload handler said about the reload it got; silence (an older handler) is said once."""
        if answer is None:
            return
        log = self.log["reload"]
        if answer.startswith("reload ok"):
            outcome = "confirmed"
            log.info("reload confirmed", answer=answer)
        elif answer.startswith("reload failed"):
            outcome = "failed"
            log.warning("the reload handler reports a failed reload; the old HAProxy serves", answer=answer)
        else:
            outcome = "unconfirmed"
            if not self._unconfirmed_said:
                log.info("reload unconfirmed; said once", answer=answer)
                self._unconfirmed_said = True
        self.status.metrics.reload_outcomes.labels(outcome=outcome).inc()

    def runtime(self, result: RuntimeResult) -> None:
        """Runtime changes taken (no reload), or why the change reloads; an unreachable socket is said once."""
        metrics, log = self.status.metrics, self.log["reload"]
        if result.applied:
            metrics.runtime_applies.inc()
            outcome = result.outcome
            drains = outcome.drains if outcome is not None else ()
            for seconds in drains:
                metrics.drain_seconds.observe(seconds)
            fields: dict[str, Any] = {"commands": outcome.commands if outcome is not None else 0}
            if drains:
                fields["drained"] = ",".join(f"{d:.2f}s" for d in drains)
            log.info("servers changed at runtime; no reload", **fields)
            self._socket_unreachable = False
            return
        reason = result.reason or "unknown"
        metrics.runtime_fallbacks.labels(reason=reason).inc()
        if reason == "admin socket unreachable":
            if not self._socket_unreachable:  # the reference's pod does not share the socket: say it once
                log.info(
                    "HAProxy's admin socket is not reachable; server changes reload HAProxy",
                    detail=result.detail,
                )
            self._socket_unreachable = True
            return
        log.info(
            "server changes need a reload",
            reason=reason,
            **({"detail": result.detail} if result.detail else {}),
        )

    def reload(self, result: ReloadResult | None) -> None:
        if result is None:
            return
        if result.sent:
            self.status.reloaded()
            self.log["reload"].info("reload sent", socket=self._socket)
        else:
            self.status.failed(Stage.RELOAD, result.error or "reload failed")

    def health(self, *, healthy: bool, flipped: bool, reason: str) -> None:
        self.status.set_healthy(healthy)
        if flipped:
            self.log["health"].info("HAProxy healthy" if healthy else "HAProxy unhealthy", reason=reason)

    def steering(self, result: SteeringResult, *, steer: bool, removed: str) -> None:
        log = self.log["steering"]
        if result.leftovers:  # the start-up sweep, once
            log.info("removed rules left by earlier monitors", removed="; ".join(result.leftovers))
        if result.warning:
            log.warning(result.warning)
        if result.error:
            self.status.failed(Stage.STEERING, result.error)
            return
        self.status.recovered(Stage.STEERING)
        self.status.set_steering(steer)
        if result.changed:
            log.info("rules installed" if steer else removed)


class Monitor:
    """Owns the decision state and sequences the effects: settle, the apply pipeline, reload retries, steering."""

    def __init__(
        self,
        *,
        settings: Settings,
        renderer: TemplatePort,
        writer: ConfigWriterPort,
        reloader: ReloaderPort,
        networks: Callable[[], Sequence[discovery.IPInterface]],
        metrics: Metrics | None = None,
        steering: SteeringPort | None = None,
        runtime: RuntimePort | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        heartbeat: Callable[[], None] | None = None,
        heartbeat_every: float | None = None,
    ) -> None:
        self.settings, self.reloader, self.steering, self.clock = settings, reloader, steering, clock
        # Called on every iteration (systemd's watchdog): a loop that hangs stops calling it, and is restarted.
        self.heartbeat, self.heartbeat_every = heartbeat, heartbeat_every
        self.metrics = metrics or Metrics()
        self.pipeline = Pipeline(
            template=renderer,
            writer=writer,
            reloader=reloader,
            clock=clock,
            runtime=runtime,
            runtime_socket=settings.runtime_socket,
        )
        self.queue = Inbox()
        self.pipeline.hurry = self.queue.stop_queued
        # --once applies the first backend set at once: there is no later change to wait for.
        quiet, max_wait = (0.0, 0.0) if settings.once else (settings.settle, settings.settle_max)
        self.settle: Settle[LBConfig] = Settle(quiet=quiet, max_wait=max_wait)
        self.health = Hysteresis(on_after=settings.health_on, off_after=settings.health_off)
        self.status = Status(
            metrics=self.metrics,
            clock=clock,
            wall=wall,
            check_interval=settings.check_interval,
            steering=steering is not None,
        )
        self.report = Report(self.status, cfg=writer.cfg, socket=reloader.socket_path)
        self.stopped = threading.Event()
        self.write_retry = Backoff(first=WRITE_RETRY_FIRST, cap=WRITE_RETRY_CAP)
        self._desired: LBConfig | None = None
        self._desired_seen: float | None = None
        self.backends = BackendSet(settings, networks)

    # -- public -------------------------------------------------------------------------------------------------
    def post(self, event: Event) -> None:
        """Thread-safe: watcher, file watcher, health poller and signal handlers only enqueue."""
        self.queue.put(event)

    def run(self, *, until: Callable[[], bool] | None = None) -> int:
        """Block until a Stop event (or ``until()`` is true); returns the exit code. Each event and tick is guarded
        (``Report.guarded``); a stop signal's ``Stopping`` is no Exception: the caller removes the rules."""
        self.report.guarded("loading the template", self._load_template)
        pause = 0.0
        while not self.stopped.is_set():
            for event in self._drain(at_least=pause):
                self.report.guarded(f"handling {type(event).__name__}", self.handle, event)
                # Alive while it makes progress: /healthz must not fail because the loop works through a burst.
                self.status.last_iteration = self.clock()
                self._beat()
                if self.stopped.is_set():
                    return 0
            pause = 0.0 if self.report.guarded("a tick", self.tick) else PAUSE_AFTER_ERROR
            self._beat()
            if until is not None and until():
                return 0
        return 0

    def handle(self, event: Event) -> None:
        """Feed one observation into the decision state (and act when it calls for it)."""
        match event:
            case Objects():
                self.status.answered(server=event.server, fallback=event.fallback)
                config = self.backends.update(event.items, self.report)
                if config is not None:
                    self.settle.observe(config, self.clock())
            case Connectivity():
                self.status.connectivity(
                    reachable=event.reachable, fallback=event.fallback, server=event.server, error=event.error
                )
            case TemplateChanged():
                self._load_template()
                if self.pipeline.template_loaded and self._desired is not None:
                    self._apply_config(self._desired, reason="template changed")
            case HealthObserved():
                flipped = self.health.observe(event.ok)
                self.report.health(healthy=self.health.state, flipped=flipped, reason=event.reason)
                if self.steering is not None:
                    self._steer(self.health.state)
            case StatsObserved():
                # The stats reader logs which source answers, or why none does; this only follows server states.
                if event.error:
                    self.status.failed(Stage.STATS, event.error)
                else:
                    self.status.servers_seen(event.servers)
            case Stop():
                self.report.log["loop"].info("stopping", reason=event.reason)
                self.shutdown()

    def tick(self) -> None:
        """Act on whatever deadline has passed: a settled backend set, a failed write's retry, a pending reload."""
        now = self.status.last_iteration = self.clock()
        seen = self.settle.pending_since()
        due, value = self.settle.take_due(now)
        if due and value is not None:
            self.report.settled(self._desired, value)
            self._desired, self._desired_seen = value, seen
            self._apply_config(value, reason="backends changed", seen=seen)
        elif self._desired is not None and self.write_retry.due is not None and now >= self.write_retry.due:
            self._apply_config(self._desired, reason="retrying a failed write", seen=self._desired_seen)
        self.report.reload(self.pipeline.deliver_reload())
        self.report.confirmation(self.reloader.confirmation())

    def shutdown(self) -> None:
        """Remove steering (traffic must not be sent to a HAProxy nobody watches) and stop."""
        try:
            if self.steering is not None:
                # Unconditional: rules may exist that this process never saw installed (a previous run's).
                self._steer(False, removed="steering rules removed on shutdown")
        finally:
            self.stopped.set()  # even when the removal failed: the caller is told, the loop still stops

    # -- decisions ---------------------------------------------------------------------------------------------
    def _beat(self) -> None:
        if self.heartbeat is not None:
            self.report.guarded("the heartbeat", self.heartbeat)

    def _drain(self, *, at_least: float = 0.0) -> list[Event]:
        """The next events, waited for until the nearest deadline (a settle, a reload retry, a write retry)."""
        pending = (self.settle.deadline(), self.reloader.deadline(), self.write_retry.due)
        deadlines = [d for d in pending if d is not None]
        wait = self.settings.check_interval
        if self.heartbeat_every is not None:
            wait = min(wait, self.heartbeat_every)
        if deadlines:
            wait = min(wait, max(0.0, min(deadlines) - self.clock()))
        return self.queue.drain(wait=max(wait, at_least))

    def _load_template(self) -> None:
        self.report.template_loaded(self.pipeline.load_template(), self.pipeline.template)

    def _apply_config(self, config: LBConfig, *, reason: str, seen: float | None = None) -> None:
        try:
            result = self.pipeline.apply(config)
        except Exception as exc:
            # A bug in a stage: kept as a failed write, so that the change is retried, not lost.
            self.report.unexpected.exception("unexpected error applying the config; it will be retried", exc)
            error = f"{self.settings.cfg}: unexpected {type(exc).__name__}: {exc}"
            result = ApplyResult(stage_failed=Stage.WRITE, error=error)
        self.report.applied(
            config, result, reason=reason, seen=seen, template_loaded=self.pipeline.template_loaded
        )
        if result.stage_failed is Stage.WRITE:
            delay = self.write_retry.failed(self.clock(), jitter=random.uniform(0.8, 1.2))
            self.report.log["write"].debug("write retry scheduled", seconds=round(delay, 3))
        else:  # written, identical, or a text that will not get better by trying again (render, validation)
            self.write_retry.succeeded()

    def _steer(self, steer: bool, *, removed: str = "rules removed") -> None:
        """Re-checked every cycle: rules present exactly while healthy (repairs external deletions)."""
        assert self.steering is not None
        result = self.steering.ensure() if steer else self.steering.remove()
        self.report.steering(result, steer=steer, removed=removed)
