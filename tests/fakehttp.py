"""Test helper: a loopback TCP server that misbehaves on demand (status codes, silence, garbage, trickling)."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass
class FakeHTTP:
    """``mode`` is ``"200"``/``"503"``/... (a status), ``"hang"``, ``"garbage"``, ``"close"``, ``"trickle"``
    (a status line, then a body byte by byte), ``"slow-headers"`` (header bytes one at a time, never ending)
    or ``"huge"``."""

    mode: str
    host: str = "127.0.0.1"
    port: int = 0
    requests: int = 0
    _sock: socket.socket | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _held: list[socket.socket] = field(default_factory=list)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/haproxy_monitor"

    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(2)
        with contextlib.suppress(OSError):
            conn.recv(4096)
        self.requests += 1
        if self.mode == "hang":
            self._held.append(conn)  # keep it open and silent until the server stops
            return
        with conn, contextlib.suppress(OSError):
            if self.mode == "garbage":
                conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
            elif self.mode == "huge":  # a valid start, then far more than any stats reader should accept
                conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/csv\r\n\r\n# pxname,svname,status\n")
                while not self._stop.is_set():
                    conn.sendall(b"x" * 65536)
            elif (
                self.mode == "slow-headers"
            ):  # each byte well within a per-read timeout, the headers never end
                conn.sendall(b"HTTP/1.0 200 OK\r\n")
                while not self._stop.is_set():
                    conn.sendall(b"X")
                    time.sleep(0.05)
            elif self.mode == "trickle":
                conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 100000\r\n\r\n")
                while not self._stop.is_set():
                    conn.sendall(b"x")
                    time.sleep(0.05)
            elif self.mode.isdigit():
                body = b"ok\n"
                head = f"HTTP/1.0 {self.mode} Whatever\r\nContent-Length: {len(body)}\r\n\r\n"
                conn.sendall(head.encode() + body)

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            ready, _, _ = select.select([self._sock], [], [], 0.05)
            if ready:
                conn, _ = self._sock.accept()
                threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    @contextlib.contextmanager
    def running(self) -> Iterator[FakeHTTP]:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.bind((self.host, self.port))
        self._sock.listen(16)
        self.port = self._sock.getsockname()[1]
        thread = threading.Thread(target=self._serve, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join(timeout=5)
            self._sock.close()
            for conn in self._held:
                conn.close()


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound but never listening, and held so nobody takes it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])
