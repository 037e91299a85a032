"""The reload line to HAProxy's container: ``reload\\n`` over the master unix socket, retried until it lands."""

from __future__ import annotations

import errno
import os
import random
import socket
import time
from collections.abc import Callable
from pathlib import Path


class Reloader:
    """Holds at most one pending reload and delivers it, retrying with jittered backoff on any socket failure.

    One short connection per reload: it survives the handler restarting between reloads, and it is what both
    our handler and the reference's ``socat UNIX-LISTEN,fork`` loop expect (they read lines until EOF).
    """

    def __init__(
        self,
        *,
        socket_path: Path,
        clock: Callable[[], float],
        backoff: tuple[float, float] = (0.2, 5.0),
        timeout: float = 2.0,
    ) -> None:
        self.socket_path = socket_path
        self._clock = clock
        self._backoff_min, self._backoff_max = backoff
        self._timeout = timeout
        self.pending = False
        self._delay = self._backoff_min
        self._next_attempt: float | None = None
        self.last_error: str | None = None

    def request(self) -> None:
        """A new config is on disk: HAProxy must reload (once, however many requests pile up)."""
        self.pending = True
        self._next_attempt = self._clock()
        self._delay = self._backoff_min

    def deadline(self) -> float | None:
        return self._next_attempt if self.pending else None

    def attempt(self) -> bool | None:
        """Try to deliver a due reload: True sent, False failed (retry scheduled), None nothing to do yet."""
        if not self.pending or self._next_attempt is None or self._clock() < self._next_attempt:
            return None
        try:
            self._send()
        except OSError as exc:
            self.last_error = self._describe(exc)
            self._next_attempt = self._clock() + self._delay * random.uniform(0.8, 1.2)
            self._delay = min(self._delay * 2, self._backoff_max)
            return False
        self.pending = False
        self._next_attempt = None
        self._delay = self._backoff_min
        self.last_error = None
        return True

    def _send(self) -> None:
        # One deadline for the whole exchange (connect, then write): a handler whose backlog is full or that
        # never reads cannot hold the loop longer than ``timeout``. Nothing is read back (HAProxy 2.6's master
        # answers nothing), so there is no answer to cap.
        deadline = time.monotonic() + self._timeout
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(self._timeout)
            sock.connect(os.fspath(self.socket_path))
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            sock.settimeout(left)
            sock.sendall(b"reload\n")
            sock.shutdown(socket.SHUT_WR)

    def _describe(self, exc: OSError) -> str:
        what = {
            errno.ENOENT: "socket missing (HAProxy's container not up yet?)",
            errno.ECONNREFUSED: "connection refused (stale socket, no handler listening)",
            errno.EPIPE: "connection closed while writing",
            errno.ECONNRESET: "connection reset while writing",
            errno.EACCES: "permission denied",
            errno.EAGAIN: "the handler accepts no connection (its backlog is full)",
        }.get(exc.errno or 0, str(exc) if not exc.strerror else exc.strerror)
        if isinstance(exc, TimeoutError):
            what = f"no answer within {self._timeout}s"
        return f"reload socket {self.socket_path}: {what}; retrying"
