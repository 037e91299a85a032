"""Plain-HTTP GETs to the local HAProxy endpoints read every check interval: the health URL, the stats page.

They run for ever, so they are made cheap:

* One connection per endpoint is kept open between exchanges (HTTP/1.1 keep-alive). A new TCP connection
  costs the caller about four times the CPU of a request on a kept one (the handshake, conntrack and the
  NAT hooks steering installs, the close). HAProxy closes the idle connections of a worker that a reload
  retires (within 50 ms on 2.6), so a kept connection reaches the running configuration. One the server
  has closed is noticed before use (a non-blocking peek) or by an answer that does not start within half
  the time left, and the request is then sent once more on a fresh connection: a GET may be repeated.
* The address that answered last for a (host, port) is tried first: a name such as "localhost" needs no
  lookup each cycle, and when it resolves to ::1 first while HAProxy is bound to 127.0.0.1 only, the refused
  attempt is not paid every cycle either. A failure forgets the address and resolves the name again.

A connection is kept only after a complete answer that allows it (HTTP/1.1, no ``Connection: close``, a
body whose end is known and has arrived); anything else closes it. Each endpoint keeps at most one idle
connection: callers on other threads (a /metrics scrape during a poll) take it in turn or open their own.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from dataclasses import dataclass

MAX_HEAD = 64 * 1024  # status line and headers
_KEPT_MAX = 8  # endpoints come from the command line and the rendered config: a handful

_answered: dict[tuple[str, int], tuple[int, tuple[object, ...]]] = {}
_kept: dict[tuple[str, int], socket.socket] = {}
_lock = threading.Lock()


class AnswerError(http.client.HTTPException):
    """What came back is not a usable HTTP/1.x answer; the message says how (no URL: the caller adds it)."""


class _Stale(Exception):
    """A kept connection the server had closed before it answered: the request goes on a fresh one."""


@dataclass(frozen=True)
class Answer:
    status: int
    reason: str
    body: bytes  # complete when read with ``body=True``; otherwise what arrived with the head


def get(host: str, port: int, request: bytes, *, deadline: float, body: bool, max_body: int) -> Answer:
    """Send ``request`` (a complete GET head, HTTP/1.1, Host included) and read the answer before ``deadline``.

    ``deadline`` is ``time.monotonic()`` time for the whole exchange, connect included. With ``body=False``
    the answer is returned once its head is in (a body still trickling is not waited for). Raises
    TimeoutError past the deadline, OSError when no connection is made or it breaks, AnswerError when the
    answer is not HTTP, is cut short or is larger than ``max_body``.
    """
    key = (host, port)
    with _lock:
        sock = _kept.pop(key, None)
    if sock is not None:
        if _idle_and_open(sock):
            # Half of what is left: a server that holds connections open but answers only the first request
            # on each (no HTTP/1.1 persistence, yet no "Connection: close") still leaves time for a new one.
            now = time.monotonic()
            try:
                return _exchange(
                    key, sock, request, now + (deadline - now) / 2, body=body, max_body=max_body, reused=True
                )
            except _Stale:
                pass
        else:
            sock.close()
    sock = _connect(host, port, _left(deadline))
    return _exchange(key, sock, request, deadline, body=body, max_body=max_body, reused=False)


def _connect(host: str, port: int, timeout: float) -> socket.socket:
    """A connected TCP socket with ``timeout`` set; raises OSError (TimeoutError included) like create_connection."""
    key = (host, port)
    known = _answered.get(key)
    if known is not None:
        family, address = known
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(address)
            return sock
        except OSError:
            sock.close()
            _answered.pop(key, None)
    sock = socket.create_connection((host, port), timeout=timeout)
    if len(_answered) >= _KEPT_MAX:
        _answered.clear()
    _answered[key] = (sock.family, sock.getpeername())
    return sock


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


def _idle_and_open(sock: socket.socket) -> bool:
    """Nothing to read and not closed by the peer: an idle keep-alive connection that may carry a request."""
    try:
        sock.settimeout(0.0)  # with a timeout, Python would wait for readability before the peek
        sock.recv(1, socket.MSG_PEEK)  # returns b"" when the peer has closed, bytes when it sent out of turn
    except BlockingIOError:
        return True
    except OSError:
        pass
    return False


def _exchange(
    key: tuple[str, int],
    sock: socket.socket,
    request: bytes,
    deadline: float,
    *,
    body: bool,
    max_body: int,
    reused: bool,
) -> Answer:
    keep = False
    try:
        reader = _Reader(max_body, body=body)
        try:
            sock.settimeout(_left(deadline))
            sock.sendall(request)
            while not reader.done():
                sock.settimeout(_left(deadline))
                chunk = sock.recv(65536)
                if not chunk:
                    reader.closed()
                    break
                reader.feed(chunk)
        except (ConnectionResetError, BrokenPipeError, TimeoutError, _Stale) as exc:
            if reader.started:
                raise
            if reused:  # nothing came back on a kept connection: the caller tries a fresh one
                raise _Stale from None
            if isinstance(exc, TimeoutError):
                raise
            raise AnswerError("the connection closed before a complete HTTP answer") from None
        answer = reader.answer()
        keep = reader.reusable()
        return answer
    finally:
        if keep:
            _keep(key, sock)
        else:
            sock.close()


def _keep(key: tuple[str, int], sock: socket.socket) -> None:
    """Park ``sock`` as the endpoint's idle connection (one each; the endpoint parked longest ago makes room)."""
    with _lock:
        surplus: socket.socket | None = sock  # when another thread parked one meanwhile
        if key not in _kept:
            surplus = _kept.pop(next(iter(_kept))) if len(_kept) >= _KEPT_MAX else None
            _kept[key] = sock
    if surplus is not None:
        surplus.close()


class _Reader:
    """One HTTP/1.x answer as its bytes arrive: the head, then a body framed by Content-Length, chunked
    encoding or the end of the connection."""

    def __init__(self, max_body: int, *, body: bool) -> None:
        self.max_body, self.body_needed = max_body, body
        self.data = bytearray()
        self.version = ""
        self.status = 0
        self.reason = ""
        self.headers: dict[str, str] | None = None
        self.body_start = 0
        self.length: int | None = None  # Content-Length
        self.chunked = False
        self.chunks = bytearray()  # the decoded body of a chunked answer
        self.chunk_at = 0  # where the next chunk-size line starts
        self.complete = False  # the whole body is in

    @property
    def started(self) -> bool:
        """Some of the answer has arrived."""
        return bool(self.data)

    def feed(self, chunk: bytes) -> None:
        self.data += chunk
        if len(self.data) > self.max_body + MAX_HEAD:
            raise AnswerError(f"answer larger than {_mib(self.max_body)}; cut off")
        if self.headers is None:
            self._head()
        if self.headers is not None:
            self._body()

    def closed(self) -> None:
        if not self.started:
            raise _Stale
        if self.headers is None:
            raise AnswerError("the connection closed before a complete HTTP answer")
        if self.length is None and not self.chunked:
            self.complete = True  # the body ends with the connection
        elif self.body_needed and not self.complete:
            raise AnswerError("the connection closed before a complete HTTP answer")

    def done(self) -> bool:
        if self.headers is None:
            return False
        return self.complete or not self.body_needed

    def answer(self) -> Answer:
        assert self.headers is not None
        if self.chunked:
            payload = bytes(self.chunks)
        elif self.length is not None:
            payload = bytes(self.data[self.body_start : self.body_start + self.length])
        else:
            payload = bytes(self.data[self.body_start :])
        return Answer(self.status, self.reason, payload)

    def reusable(self) -> bool:
        """Complete, persistent by HTTP/1.1's rules, and nothing sent beyond the answer."""
        if not self.complete or self.headers is None or self.version != "HTTP/1.1":
            return False
        if "close" in self.headers.get("connection", "").lower():
            return False
        if self.length is not None:
            return len(self.data) == self.body_start + self.length
        return self.chunked and self.chunk_at == len(self.data)

    def _head(self) -> None:
        end = self.data.find(b"\r\n\r\n")
        if end < 0:
            if len(self.data) > MAX_HEAD:
                raise AnswerError("no end of the HTTP header in 64 KiB")
            start = bytes(self.data[:12])
            if len(start) >= 5 and not start.startswith(b"HTTP/"):
                raise AnswerError(f"the answer is not HTTP: {start!r}")
            return
        lines = bytes(self.data[:end]).decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise AnswerError(f"the answer is not HTTP: {lines[0][:60]!r}")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        self.version, self.status, self.reason = version, int(code), reason
        self.headers, self.body_start = headers, end + 4
        self.chunk_at = self.body_start
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self.chunked = True
        elif self.status in (204, 304) or 100 <= self.status < 200:
            self.length = 0
        else:
            length = headers.get("content-length", "")
            if length.isdigit():
                self.length = int(length)
                if self.length > self.max_body and self.body_needed:
                    raise AnswerError(f"answer larger than {_mib(self.max_body)}; cut off")

    def _body(self) -> None:
        if self.length is not None:
            self.complete = len(self.data) - self.body_start >= self.length
        elif self.chunked:
            self._dechunk()

    def _dechunk(self) -> None:
        """Decode the chunks that are complete; ``complete`` once the last chunk and the trailers are in."""
        data = self.data
        while True:
            eol = data.find(b"\r\n", self.chunk_at)
            if eol < 0:
                if len(data) - self.chunk_at > 1024:
                    raise AnswerError("broken chunked encoding")
                return
            try:
                size = int(bytes(data[self.chunk_at : eol]).split(b";", 1)[0], 16)
            except ValueError:
                raise AnswerError("broken chunked encoding") from None
            if size == 0:
                end = data.find(b"\r\n\r\n", eol)  # no trailers: the size line's own CRLF, then CRLF
                if end < 0:
                    return
                self.chunk_at = end + 4
                self.complete = True
                return
            if len(self.chunks) + size > self.max_body:  # refused on its announced size
                raise AnswerError(f"answer larger than {_mib(self.max_body)}; cut off")
            start, stop = eol + 2, eol + 2 + size
            if len(data) < stop + 2:
                return
            if data[stop : stop + 2] != b"\r\n":
                raise AnswerError("broken chunked encoding")
            self.chunks += data[start:stop]
            self.chunk_at = stop + 2


def _mib(n: int) -> str:
    return f"{n / 1024 / 1024:g} MiB"
