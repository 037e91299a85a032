"""The kept connections of the per-cycle GETs (health URL, stats page): reused while the server keeps them, replaced
without an error when it closes them (idle timeout, a reload retiring the worker), never kept when the answer
does not allow it; and the answer's framing (length, chunks, end of connection) read right however it arrives."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.adapters.health import check_health
from monitor.adapters.localhttp import AnswerError, _idle_and_open, _Reader
from monitor.testbed.host import wait_for

OK_BODY = b"<html><body><h1>200 OK</h1>\nService ready.\n</body></html>\n"


@dataclass
class KeepAliveServer:
    """HTTP/1.1 on loopback, as HAProxy answers: ``keep`` serves every request of a connection; ``close-idle``
    closes each connection once it has answered (an idle timeout that strikes between two checks);
    ``drop-second`` reads the second request of a connection and closes it unanswered (the timeout striking
    just as the request arrives); ``mute-second`` reads it and never answers nor closes (a server without
    HTTP/1.1 persistence that does not say so); ``close-header`` answers with ``Connection: close`` and
    then closes."""

    mode: str = "keep"
    connections: int = 0
    finished: int = 0  # connections this side has closed
    requests: int = 0
    port: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/haproxy_monitor"

    def _serve_connection(self, conn: socket.socket) -> None:
        try:
            self._serve(conn)
        finally:
            conn.close()
            self.finished += 1

    def _serve(self, conn: socket.socket) -> None:
        served = 0
        conn.settimeout(5)
        buffered = b""
        while not self._stop.is_set():
            while b"\r\n\r\n" not in buffered:
                try:
                    chunk = conn.recv(4096)
                except OSError:
                    return
                if not chunk:
                    return
                buffered += chunk
            _, _, buffered = buffered.partition(b"\r\n\r\n")
            self.requests += 1
            served += 1
            if self.mode == "drop-second" and served == 2:
                return
            if self.mode == "mute-second" and served == 2:
                self._stop.wait()
                return
            close = b"Connection: close\r\n" if self.mode == "close-header" else b""
            head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n" % (len(OK_BODY), close)
            conn.sendall(head + OK_BODY)
            if self.mode in ("close-idle", "close-header"):
                return

    @contextlib.contextmanager
    def running(self) -> Iterator[KeepAliveServer]:
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(0.05)
        self.port = listener.getsockname()[1]

        def accept() -> None:
            while not self._stop.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                self.connections += 1
                threading.Thread(target=self._serve_connection, args=(conn,), daemon=True).start()

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join(5)
            listener.close()


def checks(url: str, n: int) -> list[bool]:
    return [check_health(url, timeout=2.0).ok for _ in range(n)]


def test_consecutive_checks_share_one_connection_while_the_server_keeps_it() -> None:
    with KeepAliveServer("keep").running() as srv:
        assert checks(srv.url, 10) == [True] * 10
    assert (srv.requests, srv.connections) == (10, 1)


@pytest.mark.parametrize("mode", ["close-idle", "drop-second", "mute-second", "close-header"])
def test_a_connection_the_server_ends_is_replaced_and_no_check_fails(mode: str) -> None:
    """Closed while idle (noticed before use), closed on the request or left unanswered (sent again, once, on
    a new connection), or announced with Connection: close (not kept): no check reports a failure."""
    with KeepAliveServer(mode).running() as srv:
        results = []
        for _ in range(6):
            results.append(check_health(srv.url, timeout=2.0))
            if mode == "close-idle":
                # the server has closed its side before the next check: the check finds out before sending
                wait_for(lambda: srv.finished == srv.connections, timeout=5, what="the server's close")
    assert [r.ok for r in results] == [True] * 6, [r.reason for r in results]
    assert srv.connections == 6


def test_an_http_1_0_answer_is_not_kept() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        accepted = []

        def serve() -> None:
            for _ in range(3):
                conn, _ = listener.accept()
                accepted.append(conn)
                conn.recv(4096)
                conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        assert checks(f"http://127.0.0.1:{port}/x", 3) == [True] * 3
        thread.join(5)
        assert len(accepted) == 3
        for conn in accepted:
            conn.close()


def test_a_kept_connection_is_used_only_while_idle_and_open() -> None:
    """Checked before each reuse without waiting: closed by the server, or holding bytes nobody asked for
    (they would be read as the next answer), it is not used."""
    idle, peer = socket.socketpair()
    with idle, peer:
        assert _idle_and_open(idle)
        peer.sendall(b"HTTP/1.1 200 OK\r\n")
        assert not _idle_and_open(idle)
    closed, peer = socket.socketpair()
    with closed:
        peer.close()
        assert not _idle_and_open(closed)


# -- the answer's framing, however the bytes are split ----------------------------------------------------------


def chunked(body: bytes, sizes: list[int]) -> bytes:
    out, at = b"", 0
    for size in sizes:
        piece = body[at : at + size]
        if not piece:
            break
        out += b"%x\r\n%s\r\n" % (len(piece), piece)
        at += len(piece)
    if at < len(body):
        out += b"%x\r\n%s\r\n" % (len(body) - at, body[at:])
    return out + b"0\r\n\r\n"


def feed_split(reader: _Reader, data: bytes, cuts: list[int]) -> None:
    at = 0
    for cut in sorted({c % (len(data) + 1) for c in cuts}):
        if cut > at:
            reader.feed(data[at:cut])
            at = cut
            if reader.done():
                return
    if at < len(data):
        reader.feed(data[at:])


@settings(max_examples=200, deadline=None)
@given(
    body=st.binary(max_size=3000),
    sizes=st.lists(st.integers(min_value=1, max_value=700), max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=12),
)
def test_a_chunked_answer_split_anywhere_reads_as_its_body_and_may_be_kept(
    body: bytes, sizes: list[int], cuts: list[int]
) -> None:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n"
    reader = _Reader(1 << 20, body=True)
    feed_split(reader, head + chunked(body, sizes), cuts)
    assert reader.done()
    assert reader.answer().body == body
    assert reader.reusable()


@settings(max_examples=100, deadline=None)
@given(body=st.binary(max_size=3000), cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=12))
def test_a_content_length_answer_split_anywhere_reads_as_its_body(body: bytes, cuts: list[int]) -> None:
    reader = _Reader(1 << 20, body=True)
    feed_split(reader, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body, cuts)
    assert reader.done() and reader.answer().body == body and reader.reusable()


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
            "broken chunked encoding",
        ),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabXX0\r\n\r\n",
            "broken chunked encoding",
        ),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + b"1" * 2000, "broken chunked encoding"),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n800\r\n" + b"x" * 2050, "larger than"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n", "larger than"),
        (b"SSH-2.0-OpenSSH_9.2", "not HTTP"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "not HTTP"),
    ],
)
def test_an_answer_that_breaks_its_framing_is_refused_with_what_is_wrong(answer: bytes, message: str) -> None:
    reader = _Reader(1024, body=True)
    with pytest.raises(AnswerError, match=message):
        reader.feed(answer)


def test_a_body_past_its_length_or_an_answer_ended_by_closing_is_not_kept() -> None:
    extra = _Reader(1024, body=True)
    extra.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokGARBAGE")
    assert extra.done() and extra.answer().body == b"ok" and not extra.reusable()
    until_close = _Reader(1024, body=True)
    until_close.feed(b"HTTP/1.1 200 OK\r\n\r\nsome body")
    assert not until_close.done()
    until_close.closed()
    assert until_close.done() and until_close.answer().body == b"some body" and not until_close.reusable()
    cut_short = _Reader(1024, body=True)
    cut_short.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\nshort")
    with pytest.raises(AnswerError, match="closed before a complete HTTP answer"):
        cut_short.closed()
