"""The main loop: one event queue; drain, decide, act. The only place where effects are sequenced."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence

from monitor import discovery
from monitor.backendset import BackendSet
from monitor.events import Connectivity, Event, HealthObserved, Objects, StatsObserved, Stop, TemplateChanged
from monitor.inbox import Inbox
from monitor.metrics import Metrics
from monitor.model import LBConfig
from monitor.pipeline import ApplyResult, Pipeline
from monitor.ports import (
    ConfigWriterPort,
    ReloaderPort,
    RuntimePort,
    SteeringPort,
    TemplatePort,
)
from monitor.report import Report
from monitor.settings import Settings
from monitor.stabilize import Backoff, Hysteresis, Settle
from monitor.status import Stage, Status

# A failed write (read-only or full file system, no descriptor left) is tried again after 0.5 s, doubling up
# to 30 s, until it lands: the change is never dropped to wait for some unrelated event.
WRITE_RETRY_FIRST, WRITE_RETRY_CAP = 0.5, 30.0
# With nothing due, the loop waits for events: the poller posts one pair every check interval, so this is no
# rhythm but a guard that keeps /healthz's loop-liveness stamp fresh should nothing be posted (its limit is
# max(3 intervals, 10 s); this bound stays under it).
IDLE_WAIT_INTERVALS, IDLE_WAIT_MIN = 2.0, 5.0
# After a tick that raised, the loop waits at least this long: a deadline the failure left in the past must
# not turn the loop into a spin.
PAUSE_AFTER_ERROR = 0.5


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
            # --once renders for a HAProxy that may not run yet: identical bytes need no reload there.
            verify_start=not settings.once,
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
        # --once has no poller: it looks at its own deadline (``until``) every check interval.
        interval = settings.check_interval
        self.idle_wait = interval if settings.once else max(IDLE_WAIT_INTERVALS * interval, IDLE_WAIT_MIN)

    # -- public -------------------------------------------------------------------------------------------------
    def post(self, event: Event) -> None:
        """Thread-safe: watcher, file watcher, health poller and signal handlers only enqueue."""
        self.queue.put(event)

    def post_all(self, *events: Event) -> None:
        """Thread-safe, as :meth:`post`; the loop wakes once for all of them (the poller's pair, every cycle)."""
        self.queue.put_all(events)

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
        wait = self.idle_wait
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
