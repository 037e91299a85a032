"""The one exception type of the Go template engine, with Go-style one-line messages."""

from __future__ import annotations


class GoTemplateError(Exception):
    """A parse or execution error; ``str(e)`` is Go's message (``template: NAME:LINE: ...``)."""

    def __init__(self, message: str, *, name: str, line: int | None) -> None:
        super().__init__(message)
        self.name = name
        self.line = line


class GoOutputTooLarge(GoTemplateError):
    """The output passed the byte limit the caller set (Go has no such limit; a config file needs one)."""


class BreakLoop(Exception):
    """{{break}}: unwinds to the innermost range."""


class ContinueLoop(Exception):
    """{{continue}}: unwinds to the next iteration of the innermost range."""
