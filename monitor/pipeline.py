"""The apply step as one pipeline of named stages, render → validate → write → reload, that returns what happened."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from monitor.model import LBConfig
from monitor.ports import (
    ConfigWriterPort,
    ReloaderPort,
    RuntimeOutcome,
    RuntimePort,
    RuntimeRefused,
    TemplatePort,
    ValidationError,
    WriteError,
)
from monitor.render import RenderError
from monitor.runtimeplan import NotRuntime, admin_socket, plan, state_file
from monitor.status import Stage


@dataclass(frozen=True)
class ReloadResult:
    """One attempt to deliver a pending reload; a failed one stays pending and is retried with backoff."""

    sent: bool
    error: str | None = None


@dataclass(frozen=True)
class RuntimeResult:
    """Whether a changed config reached HAProxy over its admin socket; if not, why (the reload's reason)."""

    applied: bool
    reason: str | None = None  # a short phrase, the fallback metric's label
    detail: str = ""  # one line: what HAProxy answered, which server, which socket
    outcome: RuntimeOutcome | None = None


@dataclass(frozen=True)
class ApplyResult:
    """What one pass of the pipeline did; the loop decides what to log and count from it.

    ``text`` is what was written, or would have been had validation or the write not failed. ``render_error``
    says the current template failed to render: ``text`` then came from the last template that rendered.
    """

    stage_failed: Stage | None = None  # the stage that stopped the pipeline (a failed reload does not)
    # A failed WRITE (the file system, not the text) is worth retrying: the loop does, with backoff.
    error: str | None = None
    text: str | None = None
    written: bool = False  # the live file was replaced
    applied_at: float | None = (
        None  # when the live file was confirmed to hold ``text`` (written or identical)
    )
    render_error: str | None = None
    reload: ReloadResult | None = None  # the first delivery attempt after a write
    runtime: RuntimeResult | None = None  # None: runtime changes off, or nothing HAProxy runs to change
    state_error: str | None = (
        None  # the server state could not be saved before the reload (health starts over)
    )
    # The run's first config was already the live file, but HAProxy may not run it: why it is reloaded anyway.
    start_reload: str | None = None

    @property
    def runtime_applied(self) -> bool:
        return self.runtime is not None and self.runtime.applied

    @property
    def used_last_good_template(self) -> bool:
        return self.render_error is not None and self.text is not None

    @property
    def unchanged(self) -> bool:
        """The live file already held these bytes: nothing written, nothing to reload."""
        return self.stage_failed is None and not self.written


class Pipeline:
    """Renders the config, installs it through the writer (stage, ``haproxy -c``, rename), then reloads HAProxy.

    Like confd's ``process()``/``sync()``: validation runs on the staged file before the live one changes, and
    identical bytes stop the pipeline before the write (no write, no reload). With a ``runtime`` port, a config
    that differs from the live file only in backend servers is played on HAProxy's admin socket first and then
    written without a reload; any refusal falls back to the reload.
    """

    def __init__(
        self,
        *,
        template: TemplatePort,
        writer: ConfigWriterPort,
        reloader: ReloaderPort,
        clock: Callable[[], float],
        runtime: RuntimePort | None = None,
        runtime_socket: Path | None = None,
        verify_start: bool = True,
    ) -> None:
        self.template = template
        self.runtime = runtime
        self.runtime_socket = runtime_socket  # None: the rendered config's admin socket
        self.hurry: Callable[[], bool] = lambda: False  # the loop's "a stop is queued"
        self.writer = writer
        self.reloader = reloader
        self._clock = clock
        self.template_loaded = (
            True  # False while the template on disk cannot be parsed (the previous is used)
        )
        # Until the first config of this run is known to be what HAProxy serves: an earlier run may have been
        # killed between the rename and the reload, leaving HAProxy on an older file with identical bytes now.
        self._start_checked = not verify_start

    def load_template(self) -> str | None:
        """Parse the template file again; the error, or None. On an error the previous parse stays in use."""
        try:
            self.template.load()
        except RenderError as exc:
            self.template_loaded = False
            return str(exc)
        self.template_loaded = True
        return None

    def apply(self, config: LBConfig) -> ApplyResult:
        text, render_error = self._render(config)
        if text is None:
            return ApplyResult(stage_failed=Stage.RENDER, error=render_error, render_error=render_error)
        runtime = self._runtime(text)
        failed: tuple[Stage, str] | None = None
        try:
            written = self.writer.write(text, mode=self.template.mode)
        except ValidationError as exc:
            failed = (Stage.VALIDATE, str(exc))
        except WriteError as exc:
            failed = (Stage.WRITE, str(exc))
        except OSError as exc:  # one the writer did not name, e.g. EMFILE when spawning 'haproxy -c'
            failed = (Stage.WRITE, f"{self.writer.cfg}: {exc.strerror or exc}")
        if failed is not None:
            reload = None
            if runtime is not None and runtime.applied:
                # HAProxy runs servers the file does not hold: a reload brings it back to the file.
                self.reloader.request()
                reload = self.deliver_reload()
            return ApplyResult(
                stage_failed=failed[0],
                error=failed[1],
                text=text,
                render_error=render_error,
                runtime=runtime,
                reload=reload,
            )
        applied_at = self._clock()
        reload = None
        state_error = None
        start_reload = None
        if not written and not self._start_checked:
            start_reload = self._haproxy_behind(text)
            if start_reload is not None:
                self.reloader.request()
                reload = self.deliver_reload()
        self._start_checked = True
        if written and not (runtime is not None and runtime.applied):
            state_error = self._save_state(text)
            self.reloader.request()
            reload = self.deliver_reload()
        return ApplyResult(
            start_reload=start_reload,
            text=text,
            written=written,
            applied_at=applied_at,
            render_error=render_error,
            reload=reload,
            runtime=runtime if written else None,
            state_error=state_error,
        )

    def _admin_socket(self, text: str) -> Path | None:
        """The admin socket to use: the one given, else the one the config ``text`` declares."""
        found = admin_socket(text)
        return self.runtime_socket or (Path(found) if found else None)

    def _haproxy_behind(self, text: str) -> str | None:
        """Why HAProxy may not serve the live file ``text`` (then it is reloaded); None when it is seen to."""
        socket_path = self._admin_socket(text)
        if self.runtime is None or socket_path is None:
            return "the previous run may have stopped before its reload (no admin socket to check)"
        try:
            self.runtime.check_serving(socket_path=socket_path, text=text)
        except RuntimeRefused as exc:
            return f"{exc.reason}: {exc}"
        return None

    def _save_state(self, text: str) -> str | None:
        """Before a reload: the servers' health for the new HAProxy (``server-state-file``); the error, if any."""
        path = state_file(text)
        socket_path = self._admin_socket(text)
        if self.runtime is None or path is None or socket_path is None:
            return None
        try:
            self.runtime.save_state(socket_path=socket_path, new=text, path=Path(path))
        except RuntimeRefused as exc:
            return str(exc)
        except OSError as exc:
            return f"{path}: cannot write the server state: {exc.strerror or exc}"
        return None

    def _runtime(self, text: str) -> RuntimeResult | None:
        """Play the server changes from the live file to ``text`` on HAProxy; None when there is nothing to try."""
        if self.runtime is None:
            return None
        try:
            live = self.writer.current()
        except WriteError:
            return None  # the write reports it
        if live is None:
            return None  # the first config: HAProxy starts from it
        live_text = live.decode("utf-8", "surrogateescape")
        if live_text == text:
            return None
        if self.reloader.pending:
            # HAProxy may not run the live file yet: only a reload makes it.
            return RuntimeResult(applied=False, reason="reload pending")
        decision = plan(live_text, text)
        if isinstance(decision, NotRuntime):
            return RuntimeResult(applied=False, reason=decision.reason, detail=decision.detail)
        path = self._admin_socket(text)
        if path is None:
            return RuntimeResult(
                applied=False, reason="no admin socket", detail="no 'stats socket … level admin'"
            )
        try:
            outcome = self.runtime.apply(decision, socket_path=path, hurry=self.hurry)
        except RuntimeRefused as exc:
            return RuntimeResult(applied=False, reason=exc.reason, detail=str(exc))
        return RuntimeResult(applied=True, outcome=outcome)

    def deliver_reload(self) -> ReloadResult | None:
        """Send a pending reload when it is due; None when there is none or its retry is not due yet."""
        sent = self.reloader.attempt()
        if sent is None:
            return None
        return ReloadResult(sent=sent, error=None if sent else (self.reloader.last_error or "reload failed"))

    def _render(self, config: LBConfig) -> tuple[str | None, str | None]:
        """The config text and the current template's render error (the text then comes from the last good one)."""
        try:
            return self.template.render(config), None
        except RenderError as exc:
            error = str(exc)
        # A template edit that parses but fails to render must not freeze the backend list.
        try:
            return self.template.render_last_good(config), error
        except RenderError:
            return None, error
