"""The open connections and the watch streams among them, what came in over them, and closing with a reset."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class RequestRecord:
    """One request as the simulator saw it; *user* is the client-cert CN, the token's user, or ``""``."""

    user: str
    method: str
    path: str
    kind: str  # list | watch | get | other | rejected | refused (a connection reset by the refuse fault)
    at: float = 0.0  # time.monotonic() when it arrived


class RequestLog:
    """Every request (the last 20,000), a count per kind, and why TLS handshakes failed (the last 200)."""

    def __init__(self, cond: threading.Condition) -> None:
        self._cond = cond
        self._records: deque[RequestRecord] = deque(maxlen=20000)
        self._counts: dict[str, int] = {}
        self._tls_errors: deque[str] = deque(maxlen=200)

    def add(self, record: RequestRecord) -> None:
        with self._cond:
            self._records.append(record)
            self._counts[record.kind] = self._counts.get(record.kind, 0) + 1

    def handshake_failed(self, exc: BaseException) -> None:
        with self._cond:
            detail = getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or str(exc)
            self._tls_errors.append(str(detail))

    def count(self, kind: str | None = None) -> int:
        with self._cond:
            if kind is None:
                return sum(self._counts.values())
            return self._counts.get(kind, 0)

    def records(self) -> list[RequestRecord]:
        with self._cond:
            return list(self._records)

    def tls_errors(self) -> list[str]:
        with self._cond:
            return list(self._tls_errors)


class Connections:
    """The connections being served and the watch streams among them, and whether the server is stopping.

    A cut bumps the stream generation, so that a watch which registers its stream just after the cut still
    sees it and ends. *cond* is the simulator's one condition: a cut or a stop wakes every waiting watch.
    """

    def __init__(self, cond: threading.Condition) -> None:
        self._cond = cond
        self._open: set[socket.socket] = set()
        self._streams: set[socket.socket] = set()
        self._generation = 0
        self._end_generation = 0
        self._stopping = False

    def serving(self) -> None:
        with self._cond:
            self._stopping = False

    def stop(self) -> None:
        """Wake every request that waits (watches, a hang, a trickle): the server is going away."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    @property
    def stopping(self) -> bool:
        with self._cond:
            return self._stopping

    @property
    def generation(self) -> int:
        with self._cond:
            return self._generation

    def opened(self, conn: socket.socket) -> None:
        with self._cond:
            self._open.add(conn)

    def closed(self, conn: socket.socket) -> None:
        with self._cond:
            self._open.discard(conn)
            self._streams.discard(conn)

    def stream_started(self, conn: socket.socket) -> None:
        with self._cond:
            self._streams.add(conn)

    def stream_ended(self, conn: socket.socket) -> None:
        with self._cond:
            self._streams.discard(conn)

    def stream_count(self) -> int:
        with self._cond:
            return len(self._streams)

    @property
    def end_generation(self) -> int:
        with self._cond:
            return self._end_generation

    def end_streams(self) -> int:
        """End every open watch stream as the server does when its timeout is up (a final empty chunk, the
        connection kept); returns how many were open."""
        with self._cond:
            self._end_generation += 1
            self._cond.notify_all()
            return len(self._streams)

    def cut_streams(self) -> int:
        """Reset every open watch stream (no final chunk); returns how many were cut."""
        with self._cond:
            streams = list(self._streams)
            self._generation += 1
            self._cond.notify_all()
        for sock in streams:
            abort(sock)
        return len(streams)

    def abort_all(self) -> None:
        with self._cond:
            conns = list(self._open)
        for conn in conns:
            abort(conn)


def linger_close(sock: socket.socket) -> None:
    """Close after a failed handshake so the client reads the TLS alert instead of a reset.

    Closing with unread client data in the buffer would send RST, which can destroy the alert in flight.
    """
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_WR)
        sock.settimeout(1.0)
        while socket.socket.recv(sock, 4096):
            pass
    with contextlib.suppress(OSError):
        sock.close()


def abort(sock: socket.socket) -> None:
    """Close with RST: the peer sees a reset, not an orderly end of stream."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
