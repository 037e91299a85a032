"""Template rendering: picks Jinja2 or Go text/template by file name and turns every failure into RenderError."""

from __future__ import annotations

import math
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from monitor.boundedread import read_bounded
from monitor.model import LBConfig
from monitor.render.data import go_data, jinja_data
from monitor.render.gotemplate import GoOutputTooLarge, GoTemplateError, parse_go_template

if TYPE_CHECKING:
    from jinja2.runtime import Context

Language = Literal["go", "jinja2"]

# A rendered haproxy.cfg is a few kilobytes; far more means a runaway template, which must not fill memory,
# the disk or HAProxy's parser.
MAX_OUTPUT_BYTES = 16 * 1024 * 1024
# Integers a template may compute with `**`: Python prints no more than 4,300 digits anyway.
_MAX_POWER_BITS = 16_384
# Templates are a few KiB; the cap only stops a wrong path (a log, a disk image) from being parsed as one.
MAX_TEMPLATE_BYTES = 1024 * 1024


class RenderError(Exception):
    """A template could not be loaded or rendered; the message is one line naming the file (and line)."""


def template_language(path: Path, override: Language | None = None) -> Language:
    """``.tmpl`` means Go text/template (the reference's templates), anything else Jinja2, unless overridden."""
    if override is not None:
        return override
    return "go" if path.name.endswith(".tmpl") else "jinja2"


def _too_large(path: Path) -> RenderError:
    return RenderError(f"{path}: rendered output is larger than {MAX_OUTPUT_BYTES} bytes (16 MiB); refused")


def _utf8_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogateescape"))


class _Compiled(Protocol):
    def render(self, lbconfig: LBConfig) -> str: ...


def _huge(operator: str, left: object, right: object) -> str | None:
    """Why ``left operator right`` would be too large a value to compute, or None."""
    if operator == "*":
        for seq, times in ((left, right), (right, left)):
            if (
                isinstance(seq, str | list | tuple)
                and isinstance(times, int)
                and len(seq) * times > MAX_OUTPUT_BYTES
            ):
                return "'*' would make a value of more than 16 MiB"
        return None
    if not (isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1):
        return None
    if right * math.log2(abs(left)) > _MAX_POWER_BITS:
        return f"'**' would make a number of more than {_MAX_POWER_BITS} bits"
    return None


def _sandbox(source: str, path: Path) -> Any:
    """Jinja2's immutable sandbox: no private or internal attributes, no mutation of the data, no huge values.

    A template is configuration, not code: it reads the LBConfig and writes text, nothing more.
    """
    import jinja2
    from jinja2.exceptions import SecurityError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Sandbox(ImmutableSandboxedEnvironment):
        # Intercepted operators are also kept out of compile-time constant folding, so a `'x' * 10**10`
        # fails when rendered, with the file named, rather than filling memory while loading.
        intercepted_binops = frozenset({"*", "**"})

        def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
            reason = _huge(operator, left, right)
            if reason is not None:
                raise SecurityError(reason)
            return super().call_binop(context, operator, left, right)

    return Sandbox(
        loader=jinja2.FunctionLoader(lambda _name: (source, str(path), lambda: True)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


class _JinjaTemplate:
    def __init__(self, source: str, path: Path) -> None:
        import jinja2

        self._path = path
        env = _sandbox(source, path)
        try:
            self._template = env.get_template(path.name)
        except jinja2.TemplateSyntaxError as exc:
            raise RenderError(f"{path}:{exc.lineno}: template syntax error: {exc.message}") from None

    def render(self, lbconfig: LBConfig) -> str:
        import jinja2

        try:
            parts: list[str] = []
            size = 0
            # Streamed, so that a runaway loop stops at the cap instead of first building all of its text.
            for chunk in self._template.generate(jinja_data(lbconfig)):
                size += _utf8_size(chunk)
                if size > MAX_OUTPUT_BYTES:
                    raise _too_large(self._path)
                parts.append(chunk)
            return "".join(parts)
        except RenderError:
            raise
        except jinja2.TemplateError as exc:
            raise RenderError(f"{self._where(exc)}: {type(exc).__name__}: {exc}") from None
        except Exception as exc:  # a filter or test raising: still the template's fault
            raise RenderError(f"{self._where(exc)}: {type(exc).__name__}: {exc}") from None

    def _where(self, exc: BaseException) -> str:
        # Jinja rewrites tracebacks so frames carry the template's file name and line.
        line = None
        for frame in traceback.extract_tb(exc.__traceback__):
            if frame.filename == str(self._path):
                line = frame.lineno
        return f"{self._path}:{line}" if line else str(self._path)


class _GoTemplate:
    def __init__(self, source: str, path: Path) -> None:
        self._path = path
        try:
            self._template = parse_go_template(source, name=path.name)
        except GoTemplateError as exc:
            raise RenderError(f"{path}: {exc}") from None

    def render(self, lbconfig: LBConfig) -> str:
        try:
            return self._template.execute(go_data(lbconfig), limit=MAX_OUTPUT_BYTES)
        except GoOutputTooLarge:
            raise _too_large(self._path) from None
        except GoTemplateError as exc:
            raise RenderError(f"{self._path}: {exc}") from None


class Renderer:
    """A template file, parsed once and re-parsed on :meth:`load` (after the file changed)."""

    def __init__(self, path: Path, *, language: Language | None = None) -> None:
        self.path = path
        self.language = template_language(path, language)
        self._compiled: _Compiled | None = None
        self._last_good: _Compiled | None = None
        self.mode: int = 0o644

    def load(self) -> None:
        """Read and parse the template; raises RenderError (the previous parse is kept on failure)."""
        try:
            # Bounded and non-blocking: a FIFO or device here must not hang the loop that calls load().
            source = read_bounded(self.path, limit=MAX_TEMPLATE_BYTES).decode("utf-8")
            self.mode = self.path.stat().st_mode & 0o7777
        except OSError as exc:
            raise RenderError(f"{self.path}: cannot read template: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            line = exc.object[: exc.start].count(b"\n") + 1
            raise RenderError(
                f"{self.path}:{line}: template is not UTF-8 text: byte 0x{exc.object[exc.start]:02x} "
                f"at offset {exc.start} ({exc.reason})"
            ) from None
        self._compiled = (
            _GoTemplate(source, self.path) if self.language == "go" else _JinjaTemplate(source, self.path)
        )

    def render(self, lbconfig: LBConfig) -> str:
        if self._compiled is None:
            self.load()
        assert self._compiled is not None
        text = self._compiled.render(lbconfig)
        self._last_good = self._compiled
        return text

    def render_last_good(self, lbconfig: LBConfig) -> str | None:
        """Render with the last template that rendered successfully, if it is not the current one.

        A template edit that parses but fails to render must not freeze the backend list: the loop keeps
        HAProxy's servers current with the previous template while it reports the broken one.
        """
        if self._last_good is None or self._last_good is self._compiled:
            return None
        return self._last_good.render(lbconfig)
