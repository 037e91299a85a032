"""What the monitor reports about itself: its status, /readyz and /healthz, and each stage's failure and recovery."""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, get_args

from monitor.logs import Log, OnceLog
from monitor.metrics import Metrics
from monitor.model import LBConfig, ServerState

Check = Literal["api", "template", "config", "reload", "steering", "stats"]


class Stage(enum.Enum):
    """A step of the work that can fail and later recover; its failure shows in one /readyz check."""

    LOAD = "load"  # read and parse the template
    RENDER = "render"
    VALIDATE = "validate"  # haproxy -c on the staged file
    WRITE = "write"  # stage, fsync, rename over the live file
    RELOAD = "reload"
    STEERING = "steering"
    STATS = "stats"


@dataclass(frozen=True)
class _Rule:
    """How a stage's failure is reported: the /readyz check that shows it, the counter that counts it, and the
    line logged when a logged failure clears (None: not logged here; the stats reader logs its own)."""

    check: Check
    counter: Callable[[Metrics], Any] | None
    recovered: str | None


_RULES: dict[Stage, _Rule] = {
    Stage.LOAD: _Rule("template", lambda m: m.render_errors, "template loads again"),
    Stage.RENDER: _Rule("template", lambda m: m.render_errors, "template renders again"),
    Stage.VALIDATE: _Rule(
        "config", lambda m: m.validation_errors, "config written again after earlier failure"
    ),
    Stage.WRITE: _Rule("config", lambda m: m.write_errors, "config written again after earlier failure"),
    Stage.RELOAD: _Rule("reload", lambda m: m.reload_failures, "reload socket accepts again"),
    Stage.STEERING: _Rule("steering", lambda m: m.steering_errors, "nftables works again"),
    Stage.STATS: _Rule("stats", None, None),
}
# The subsystem each check's errors are logged under (once per distinct error).
_SUBSYSTEM: dict[Check, str] = {
    "template": "render",
    "config": "write",
    "reload": "reload",
    "steering": "steering",
}


class Status:
    """What /healthz, /readyz, ``--once`` and the demo read, and the metrics and logs that go with it.

    Written only by the loop thread: the loop decides, this keeps the record and says so once.
    """

    def __init__(
        self,
        *,
        metrics: Metrics,
        clock: Callable[[], float],
        wall: Callable[[], float],
        check_interval: float,
        steering: bool,
    ) -> None:
        self.metrics = metrics
        self._clock = clock
        self._wall = wall
        self._check_interval = check_interval
        self._steering = steering
        self.started = self.last_iteration = clock()
        self.api_reachable = False
        self.api_fallback = False
        self.api_server = ""
        self.applied: LBConfig | None = None
        self.last_apply: float | None = None
        self.reload_pending = False
        self.healthy = False
        self.steering_active = False
        self.servers: dict[tuple[str, str], ServerState] = {}
        self.empty_refused: int | None = None  # while refusing an empty set: how many backends are kept
        self.errors: dict[Check, str | None] = dict.fromkeys(get_args(Check))
        self._once = {check: OnceLog(Log(subsystem)) for check, subsystem in _SUBSYSTEM.items()}
        self._discovery = Log("discovery")
        self._stats = Log("stats")

    # -- failure and recovery, one way for every stage ------------------------------------------------------
    def failed(self, stage: Stage, error: str) -> None:
        """Count the failure, show it in its /readyz check, and log it once per distinct error."""
        rule = _RULES[stage]
        if rule.counter is not None:
            rule.counter(self.metrics).inc()
        self.errors[rule.check] = error
        if rule.check in self._once:
            self._once[rule.check].error(error)

    def recovered(self, stage: Stage) -> None:
        """Clear the stage's /readyz check; say so when its failure had been logged."""
        rule = _RULES[stage]
        self.errors[rule.check] = None
        if rule.check in self._once and rule.recovered is not None:
            self._once[rule.check].clear(rule.recovered)

    # -- observations that are reported as they change --------------------------------------------------------
    def connectivity(self, *, reachable: bool, fallback: bool, server: str, error: str | None) -> None:
        """The watcher's view of the API; logged when reachability, the fallback or the error changes."""
        changed = (self.api_reachable, self.api_fallback, self.api_error) != (reachable, fallback, error)
        self.api_reachable, self.api_fallback, self.api_server = reachable, fallback, server
        self.errors["api"] = error
        self.metrics.fallback_active.set(1 if fallback else 0)
        self.metrics.api_reachable.set(1 if reachable else 0)
        if not changed:
            return
        if error:
            self._discovery.error(error, server=server, fallback=fallback)
        elif fallback:
            self._discovery.warning("API read through the localhost fallback", server=server)
        else:
            self._discovery.info("API reachable", server=server)

    def answered(self, *, server: str, fallback: bool) -> None:
        """Objects arrived: whoever served them answered (not logged; the watcher reports its own changes)."""
        self.api_reachable = True
        self.errors["api"] = None
        if server:
            self.api_server, self.api_fallback = server, fallback
        self.metrics.api_reachable.set(1)
        self.metrics.fallback_active.set(1 if self.api_fallback else 0)

    def config_applied(self, config: LBConfig, *, at: float, written: bool, seen: float | None) -> None:
        """The live config holds ``config`` (``written``: it was just replaced); ``seen``: when discovery saw it."""
        self.recovered(Stage.WRITE)
        self.applied, self.last_apply = config, at
        self.metrics.backends.set(len(config.backends))
        self.metrics.last_apply.set(self._wall())
        if written:
            self.metrics.applies.inc()
            if seen is not None:
                self.metrics.apply_latency.observe(at - seen)

    def refusing_empty(self, kept: int | None) -> None:
        """``kept``: the API lists no usable backend and the last ``kept`` backends stay; None: it lists some."""
        self.empty_refused = kept
        self.metrics.empty_backend_set_refused.set(0 if kept is None else 1)

    def reloaded(self) -> None:
        self.metrics.reloads.inc()
        self.reload_pending = False
        self.recovered(Stage.RELOAD)

    def set_healthy(self, healthy: bool) -> None:
        self.healthy = healthy
        self.metrics.healthy.set(1 if healthy else 0)

    def set_steering(self, active: bool) -> None:
        self.steering_active = active
        self.metrics.steering_active.set(1 if active else 0)

    def servers_seen(self, servers: Iterable[ServerState]) -> None:
        """HAProxy's view of its servers; one log line per server whose state changed since the last read."""
        self.recovered(Stage.STATS)
        previous, current = self.servers, {(s.proxy, s.server): s for s in servers}
        self._stats.debug("stats read", states=sorted(f"{s.server}={s.status}" for s in current.values()))
        for key, now in current.items():
            old = previous.get(key)
            if old is not None and old.status != now.status:
                self._stats.info(
                    "server state changed",
                    proxy=now.proxy,
                    server=now.server,
                    old=old.status,
                    new=now.status,
                    check=now.check_status,
                )
        self.servers = current

    # -- the errors, by check --------------------------------------------------------------------------------
    @property
    def api_error(self) -> str | None:
        return self.errors["api"]

    @property
    def template_error(self) -> str | None:
        return self.errors["template"]

    @property
    def config_error(self) -> str | None:
        return self.errors["config"]

    @property
    def reload_error(self) -> str | None:
        return self.errors["reload"]

    @property
    def steering_error(self) -> str | None:
        return self.errors["steering"]

    @property
    def stats_error(self) -> str | None:
        return self.errors["stats"]

    # -- probes ----------------------------------------------------------------------------------------------
    def healthz(self) -> tuple[bool, dict[str, object]]:
        """Alive while the loop iterates: at least every three check intervals (10 s at the least)."""
        age = self._clock() - self.last_iteration
        limit = max(3 * self._check_interval, 10.0)
        return age <= limit, {"loop_last_iteration_age_seconds": round(age, 3), "limit_seconds": limit}

    def readyz(self) -> tuple[bool, dict[str, object]]:
        """Ready while the API answers and the config HAProxy runs is current, reloaded and steered as decided
        (not while an empty backend set is refused: the config is then deliberately not what the API says)."""
        steering = ("active" if self.steering_active else "inactive") if self._steering else "off"
        checks: dict[str, object] = {
            "api": "ok" if self.api_reachable else (self.api_error or "no answer from the API yet"),
            "api_server": self.api_server,
            "api_fallback": self.api_fallback,
            "config": "ok"
            if self.applied is not None and self.config_error is None
            else (self.config_error or "no config rendered yet"),
            "template": self.template_error or "ok",
            "backends": self._backends_check(),
            "reload": "ok" if not self.reload_pending else (self.reload_error or "reload pending"),
            "healthy": self.healthy,
            "steering": steering if self.steering_error is None else self.steering_error,
        }
        ready = (
            self.api_reachable
            and self.applied is not None
            and self.config_error is None
            and self.template_error is None
            and not self.reload_pending
            and self.steering_error is None
            and self.empty_refused is None
        )
        return ready, checks

    def _backends_check(self) -> str:
        if self.empty_refused is not None:
            return f"the API lists no usable backend; keeping the last {self.empty_refused}"
        if self.applied is not None and not self.applied.backends:
            # The very first set was empty: nothing to keep, so HAProxy serves no server (and reports unhealthy).
            return "none: the API lists no usable backend"
        return "ok"
