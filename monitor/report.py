"""What each outcome the loop sequences means for the status, the metrics and the log (one line per event)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from monitor.logs import Log, UnexpectedLog
from monitor.model import Backend, LBConfig
from monitor.pipeline import ApplyResult, ReloadResult, RuntimeResult
from monitor.ports import SteeringResult, TemplatePort
from monitor.status import Stage, Status

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
    """Turns each outcome into status, metrics and at most one log line; the loop decides, this only tells."""

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
        if result.unchanged and result.start_reload is not None:
            self.log["reload"].info(
                "config unchanged, but HAProxy may not serve it: reloading",
                cfg=self._cfg,
                why=result.start_reload,
            )
            self.status.reload_pending = True
            self.reload(result.reload)
            return
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
