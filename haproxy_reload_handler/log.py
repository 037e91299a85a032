"""The handler's event log: one line per event on stderr, prefixed with the program name."""

from __future__ import annotations

import contextlib
import os

PROG = "haproxy-reload-handler"


def log(message: str) -> None:
    """Write one event line in a single write(2) so that lines from several threads never interleave."""
    with contextlib.suppress(OSError):
        os.write(2, f"{PROG}: {message}\n".encode(errors="replace"))
