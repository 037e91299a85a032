"""The reload line to HAProxy's container: ``reload\\n`` over the master unix socket, retried until it lands."""

from __future__ import annotations

import errno
import os
import random
import socket
import time
from collections.abc import Callable
from pathlib import Path

# How long a delivered reload waits for the handler's one-line outcome (on the injected clock), and how often the
# loop looks for it meanwhile.
CONFIRM_TIMEOUT = 30.0
CONFIRM_POLL = 0.05
MAX_ANSWER = 4096


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
        serving: Callable[[], int | None] | None = None,
    ) -> None:
        self.socket_path = socket_path
        self._clock = clock
        self._backoff_min, self._backoff_max = backoff
        self._timeout = timeout
        self.pending = False
        self._delay = self._backoff_min
        self._next_attempt: float | None = None
        self.last_error: str | None = None
        self._answer: socket.socket | None = None  # the delivered reload's connection, read for its outcome
        self._answer_due = 0.0
        self._answer_buf = b""
        # For handlers that answer nothing: which HAProxy serves (``show info``'s Pid), before and after.
        self._serving = serving
        self._pid_before: int | None = None
        self._probing = False

    def request(self) -> None:
        """A new config is on disk: HAProxy must reload (once, however many requests pile up)."""
        self.pending = True
        self._next_attempt = self._clock()
        self._delay = self._backoff_min

    def deadline(self) -> float | None:
        due = [self._next_attempt] if self.pending and self._next_attempt is not None else []
        if self._answer is not None or self._probing:
            due.append(min(self._clock() + CONFIRM_POLL, self._answer_due))
        return min(due) if due else None

    def confirmation(self) -> str | None:
        """The delivered reload's outcome, once: the handler's line (``reload ok: …``, ``reload failed: …``), or
        ``reload unconfirmed: …`` when the connection ends without one (handlers that answer nothing) or the answer
        is late; None while it is awaited or when no reload awaits one. Never blocks."""
        if self._probing:
            return self._probe()
        sock = self._answer
        if sock is None:
            return None
        try:
            data = sock.recv(MAX_ANSWER)
        except (BlockingIOError, InterruptedError):
            if self._clock() < self._answer_due:
                return None
            return self._close_answer(f"reload unconfirmed: no answer within {CONFIRM_TIMEOUT:g}s")
        except OSError as exc:
            return self._close_answer(f"reload unconfirmed: {exc.strerror or exc}")
        self._answer_buf += data
        line, newline, _ = self._answer_buf.partition(b"\n")
        if newline or not data or len(self._answer_buf) >= MAX_ANSWER:
            text = line.decode(errors="replace").strip()
            # Only when the admin socket answered before the reload (it is not shared in the reference's pod).
            if not text and self._serving is not None and self._pid_before is not None:
                self._close_answer("")
                self._probing = True  # a silent handler: look for a new HAProxy on the admin socket instead
                return self._probe()
            return self._close_answer(
                text or "reload unconfirmed: the handler answers nothing (an older handler?)"
            )
        return None

    def _probe(self) -> str | None:
        assert self._serving is not None
        pid = self._serving()
        if pid is not None and pid != self._pid_before:
            self._probing = False
            return f"reload ok (seen on the admin socket): haproxy worker pid {pid} serves"
        if self._clock() < self._answer_due:
            return None
        self._probing = False
        return f"reload unconfirmed: the handler answers nothing and no new HAProxy showed in {CONFIRM_TIMEOUT:g}s"

    def _close_answer(self, text: str) -> str:
        if self._answer is not None:
            self._answer.close()
        self._answer, self._answer_buf = None, b""
        return text

    def attempt(self) -> bool | None:
        """Try to deliver a due reload: True sent, False failed (retry scheduled), None nothing to do yet."""
        if not self.pending or self._next_attempt is None or self._clock() < self._next_attempt:
            return None
        pid_before = self._serving() if self._serving is not None else None
        try:
            sock = self._send()
        except OSError as exc:
            self.last_error = self._describe(exc)
            self._next_attempt = self._clock() + self._delay * random.uniform(0.8, 1.2)
            self._delay = min(self._delay * 2, self._backoff_max)
            return False
        self.pending = False
        self._next_attempt = None
        self._delay = self._backoff_min
        self.last_error = None
        self._close_answer("")  # a newer reload's outcome is the one that counts
        self._probing, self._pid_before = False, pid_before
        sock.setblocking(False)
        self._answer, self._answer_due = sock, self._clock() + CONFIRM_TIMEOUT
        return True

    def _send(self) -> socket.socket:
        # One deadline for the whole exchange (connect, then write): a handler whose backlog is full or that
        # never reads cannot hold the loop longer than ``timeout``. The answer is read later without blocking
        # (``confirmation``): our handler answers one line once the new HAProxy runs, older ones nothing.
        deadline = time.monotonic() + self._timeout
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self._timeout)
            sock.connect(os.fspath(self.socket_path))
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            sock.settimeout(left)
            sock.sendall(b"reload\n")
            sock.shutdown(socket.SHUT_WR)
        except BaseException:
            sock.close()
            raise
        return sock

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
