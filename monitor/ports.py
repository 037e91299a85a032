"""The effects the loop sequences, declared once: template, config writer, reloader, steering, and their errors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from monitor.model import LBConfig
from monitor.runtimeplan import RuntimePlan


class WriteError(Exception):
    """The new configuration did not replace the live one; the message is one line naming the file."""


class ValidationError(WriteError):
    """HAProxy rejected the rendered configuration."""


@dataclass(frozen=True)
class SteeringResult:
    """Outcome of one ensure/remove: did anything change, a one-line error, our rule count after.

    ``leftovers`` names what the start-up sweep removed (rules earlier monitors left behind);
    ``warning`` says why part of the sweep could not run (it does not stop steering).
    """

    changed: bool
    error: str | None
    rules: int
    leftovers: tuple[str, ...] = ()
    warning: str | None = None


class TemplatePort(Protocol):
    """The template file, parsed (``load``) and rendered; every failure is a ``monitor.render.RenderError``."""

    @property
    def path(self) -> Path: ...

    @property
    def language(self) -> str: ...

    @property
    def mode(self) -> int: ...  # the template file's permission bits, given to the written config

    def load(self) -> None: ...

    def render(self, lbconfig: LBConfig) -> str: ...

    def render_last_good(self, lbconfig: LBConfig) -> str | None: ...


class ConfigWriterPort(Protocol):
    """The live haproxy.cfg: ``write`` stages, validates and renames, or raises ValidationError/WriteError."""

    @property
    def cfg(self) -> Path: ...

    def write(self, text: str, *, mode: int = 0o644) -> bool: ...  # False: already byte-identical

    def current(self, *, limit: int | None = None) -> bytes | None: ...  # the live bytes; None: no file


class ReloaderPort(Protocol):
    """Holds at most one pending reload; ``attempt`` delivers it when due (True sent, False failed, None not due)."""

    @property
    def socket_path(self) -> Path: ...

    @property
    def last_error(self) -> str | None: ...

    @property
    def pending(self) -> bool: ...  # a reload is requested and not delivered yet

    def request(self) -> None: ...

    def deadline(self) -> float | None: ...

    def attempt(self) -> bool | None: ...

    def confirmation(self) -> str | None: ...  # the delivered reload's outcome line, once; never blocks


class RuntimeRefused(Exception):
    """HAProxy did not take a runtime change, or its servers differ from what was planned: reload instead.

    ``reason`` is a short fixed phrase (the fallback metric's label); the message is one line naming the socket.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class RuntimeOutcome:
    """A runtime plan HAProxy took and read back as planned; the seconds each removed server spent draining."""

    commands: int
    drains: tuple[float, ...] = ()


class RuntimePort(Protocol):
    """HAProxy's admin socket: ``apply`` plays a RuntimePlan and reads it back, or raises RuntimeRefused."""

    # ``hurry``: true once the monitor is asked to stop; a drain then ends at once (steering must go first).
    def apply(self, plan: RuntimePlan, *, socket_path: Path, hurry: Callable[[], bool]) -> RuntimeOutcome: ...

    def save_state(
        self, *, socket_path: Path, new: str, path: Path
    ) -> None: ...  # raises OSError, RuntimeRefused

    # Raises RuntimeRefused unless HAProxy runs exactly the backend servers of ``text`` (or cannot be asked).
    def check_serving(self, *, socket_path: Path, text: str) -> None: ...


class SteeringPort(Protocol):
    """API VIP traffic steered into HAProxy: rules installed (``ensure``) or absent (``remove``); never raises."""

    def ensure(self) -> SteeringResult: ...

    def remove(self) -> SteeringResult: ...
