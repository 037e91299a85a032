"""Structured logging: one line per event with a subsystem field, as text or JSON."""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any

ROOT = "monitor"


class _Formatter(logging.Formatter):
    def __init__(self, *, json_format: bool) -> None:
        super().__init__()
        self.json_format = json_format

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        subsystem = getattr(record, "subsystem", record.name.rsplit(".", 1)[-1])
        fields: Mapping[str, Any] = getattr(record, "fields", {}) or {}
        message = record.getMessage()
        trace = ""
        if record.exc_info and record.exc_info[1] is not None:
            message = f"{message}: {record.exc_info[1]!r}"
            trace = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        if self.json_format:
            doc = {"ts": ts, "level": record.levelname.lower(), "subsystem": subsystem, "msg": message}
            doc.update({k: v for k, v in fields.items() if k not in doc})
            if trace:
                doc["traceback"] = trace
            return json.dumps(doc, default=str, separators=(",", ":"))
        extra = "".join(f" {k}={_text_value(v)}" for k, v in fields.items())
        # The traceback follows its line, as Python prints it: only unexpected errors carry one.
        return f"{ts} {record.levelname.lower():<7} {subsystem:<9} {message}{extra}" + (
            f"\n{trace}" if trace else ""
        )


def _text_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, separators=(",", ":"))
    return json.dumps(text) if (not text or any(c in text for c in ' "=')) else text


def setup(*, fmt: str = "text", level: int | str = logging.INFO) -> None:
    """Send the package's logs to stderr in the chosen format (called once by the CLI)."""
    if isinstance(level, str):
        level = logging.getLevelName(level.upper())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(json_format=fmt == "json"))
    root = logging.getLogger(ROOT)
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


class Log:
    """A logger bound to one subsystem; keyword arguments become fields."""

    def __init__(self, subsystem: str) -> None:
        self.subsystem = subsystem
        self._logger = logging.getLogger(f"{ROOT}.{subsystem}")

    def _log(self, level: int, msg: str, fields: dict[str, Any], exc: BaseException | None = None) -> None:
        if self._logger.isEnabledFor(level):
            self._logger.log(level, msg, extra={"subsystem": self.subsystem, "fields": fields}, exc_info=exc)

    def debug(self, msg: str, **fields: Any) -> None:
        self._log(logging.DEBUG, msg, fields)

    def info(self, msg: str, **fields: Any) -> None:
        self._log(logging.INFO, msg, fields)

    def warning(self, msg: str, **fields: Any) -> None:
        self._log(logging.WARNING, msg, fields)

    def error(self, msg: str, **fields: Any) -> None:
        self._log(logging.ERROR, msg, fields)

    def exception(self, msg: str, exc: BaseException, **fields: Any) -> None:
        """An error with the exception's traceback (text: after the line; JSON: a ``traceback`` field)."""
        self._log(logging.ERROR, msg, fields, exc)


class OnceLog:
    """Logs an error once per distinct cause, and says when the cause has cleared."""

    def __init__(self, log: Log) -> None:
        self._log = log
        self.current: str | None = None

    def error(self, message: str, **fields: Any) -> None:
        if message != self.current:
            self._log.error(message, **fields)
            self.current = message

    def clear(self, message: str = "recovered") -> None:
        if self.current is not None:
            self._log.info(message, previous_error=self.current)
            self.current = None


class UnexpectedLog:
    """Unexpected exceptions (bugs, not environment failures): each logged with its traceback, a repeat of the
    one just logged (same type, message and place) only counted, so a failure on every cycle is not a flood."""

    def __init__(self, log: Log, *, count: Callable[[], None] | None = None) -> None:
        self._log = log
        self._count = count
        self._last: tuple[str, str, str] | None = None

    def exception(self, msg: str, exc: BaseException, **fields: Any) -> None:
        if self._count is not None:
            self._count()
        frames = traceback.extract_tb(exc.__traceback__)
        where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else ""
        signature = (type(exc).__name__, str(exc), where)
        if signature != self._last:
            self._log.exception(msg, exc, **fields)
            self._last = signature
