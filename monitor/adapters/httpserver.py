"""The sidecar's own HTTP endpoint: /healthz, /readyz (JSON, 200/503) and /metrics (Prometheus text)."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import socket
import socketserver
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, cast

from prometheus_client.exposition import choose_encoder

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

Check = Callable[[], tuple[bool, dict[str, object]]]

# Per connection: a request head must arrive whole within REQUEST_DEADLINE of the connection (or of the last
# answer on a kept-alive one), so a client trickling a byte a second is cut; an answer must be taken within
# RESPONSE_DEADLINE. Heads larger than MAX_HEAD_BYTES are cut too (ours are a few hundred bytes).
REQUEST_DEADLINE = 5.0
RESPONSE_DEADLINE = 10.0
MAX_HEAD_BYTES = 64 * 1024
# At most MAX_CONNECTIONS connections (one thread and one descriptor each) are open at once; the kernel queues
# BACKLOG more that were not accepted yet.
MAX_CONNECTIONS = 64
BACKLOG = 128


class ListenError(Exception):
    """The endpoint could not be opened; the message names ``--listen`` and what to do."""


class PortInUseError(ListenError):
    """Another process already listens on the ``--listen`` address."""


def parse_listen(listen: str) -> tuple[str, int]:
    """``"127.0.0.1:9448"`` or ``"[::1]:9448"`` → (host, port); raises ListenError naming --listen."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not port_text.isdigit() or not host:
        raise ListenError(f"--listen {listen}: expected HOST:PORT such as 127.0.0.1:9448 or [::1]:9448")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ListenError(f"--listen {listen}: put IPv6 addresses in brackets, e.g. [::1]:9448")
    port = int(port_text)
    if port > 65535:
        raise ListenError(f"--listen {listen}: port must be 0-65535")
    return host, port


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # stop() must not wait for clients: every connection ends by its own deadline anyway.
    block_on_close = False
    # Fail loudly when the port is held by a listener, but do not refuse a restart while old
    # connections sit in TIME_WAIT (SO_REUSEADDR on Linux does exactly that).
    allow_reuse_address = True
    request_queue_size = BACKLOG

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        *,
        family: socket.AddressFamily,
        max_connections: int,
    ) -> None:
        self.address_family = family
        self.max_connections = max_connections
        # Open connections → when each began waiting for its next request (None while being answered).
        self._open: dict[socket.socket, float | None] = {}
        self._open_lock = threading.Lock()
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the FQDN of the bind address, which can stall on a host
        # whose DNS is down, exactly when health endpoints matter; the name is never used here.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def open_connections(self) -> int:
        with self._open_lock:
            return len(self._open)

    def mark(self, conn: socket.socket, *, waiting: bool) -> None:
        with self._open_lock:
            if conn in self._open:
                self._open[conn] = time.monotonic() if waiting else None

    def get_request(self) -> tuple[socket.socket, Any]:
        try:
            return super().get_request()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                # Out of descriptors (not through us: we hold at most max_connections): the pending connection
                # stays readable, so without a pause serve_forever would spin on accept at full CPU.
                time.sleep(0.1)
            raise

    def process_request(self, request: Any, client_address: Any) -> None:
        """Admit the connection, making room by closing the one that has waited longest for its request.

        Idle and trickling connections are what a flood is made of, and a probe sends its request at once:
        evicting the longest-waiting one keeps /healthz answering while the flood lasts. When all open
        connections are being answered the newcomer is closed at once.
        """
        with self._open_lock:
            if len(self._open) >= self.max_connections:
                waiting = [(since, conn) for conn, since in self._open.items() if since is not None]
                if not waiting:
                    admitted = False
                else:
                    _, oldest = min(waiting, key=lambda item: item[0])
                    del self._open[oldest]
                    # Under the lock: its own thread deregisters under the lock before closing it, so this
                    # never reaches a descriptor number that was closed and reused.
                    with contextlib.suppress(OSError):
                        oldest.shutdown(socket.SHUT_RDWR)  # its thread sees EOF and ends
                    admitted = True
            else:
                admitted = True
            if admitted:
                self._open[request] = time.monotonic()
        if not admitted:
            socketserver.TCPServer.shutdown_request(self, request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.shutdown_request(request)  # no thread to serve it (e.g. thread limit)
            raise

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.pop(request, None)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that goes away, is cut at its deadline or sends an oversized head is routine, not a
        # traceback on stderr (the log stream).
        return


class _DeadlineReader(io.RawIOBase):
    """The handler's socket as a raw stream whose reads share the handler's deadline and byte budget.

    A socket timeout applies to each recv, so a client sending a byte just before each expiry would never be
    cut: here every recv may wait only for what is left of the deadline.
    """

    def __init__(self, handler: _Limits) -> None:
        super().__init__()
        self._handler = handler

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        handler = self._handler
        left = handler.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("request deadline passed")
        if handler.head_budget <= 0:
            raise ConnectionAbortedError(f"request head larger than {MAX_HEAD_BYTES} bytes")
        handler.connection.settimeout(left)
        n: int = handler.connection.recv_into(buffer)
        handler.head_budget -= n
        return n


class _Limits(BaseHTTPRequestHandler):
    """BaseHTTPRequestHandler with a deadline and a size budget for each request, and one for each answer."""

    timeout = REQUEST_DEADLINE  # also bounds each send
    deadline = 0.0
    head_budget = MAX_HEAD_BYTES

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # the plain file object; ours below reads the same socket under the deadline
        self.rfile = io.BufferedReader(_DeadlineReader(self))

    def handle_one_request(self) -> None:
        self.deadline = time.monotonic() + REQUEST_DEADLINE
        self.head_budget = MAX_HEAD_BYTES
        cast(_Server, self.server).mark(self.connection, waiting=True)
        super().handle_one_request()

    def answering(self) -> None:
        """The request head is in: from now on the answer's deadline applies, and no eviction."""
        cast(_Server, self.server).mark(self.connection, waiting=False)
        self.deadline = time.monotonic() + RESPONSE_DEADLINE

    def within_deadline(self) -> None:
        """Call before each write: sendall's timeout bounds the whole call (not each send) since Python 3.5."""
        self.connection.settimeout(max(0.001, self.deadline - time.monotonic()))


class StatusServer:
    """Serves health, readiness and metrics from a daemon thread; start() binds, stop() joins."""

    def __init__(
        self,
        *,
        listen: str,
        healthz: Check,
        readyz: Check,
        registry: CollectorRegistry,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self._listen = listen
        self._max_connections = max_connections
        self._host, self._port = parse_listen(listen)
        self._checks: dict[str, Check] = {"/healthz": healthz, "/readyz": readyz}
        self._registry = registry
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with ``:0``); the configured one before start()."""
        if self._server is not None:
            return int(self._server.server_address[1])
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        """Bind and serve in a daemon thread; raises PortInUseError/ListenError with a one-line message."""
        handler = self._handler_class()
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        try:
            server = _Server(
                (self._host, self._port), handler, family=family, max_connections=self._max_connections
            )
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(f"--listen {self._listen}: address already in use") from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise ListenError(f"--listen {self._listen}: no local interface has this address") from None
            if exc.errno == errno.EACCES:
                raise ListenError(
                    f"--listen {self._listen}: permission denied (ports < 1024 need root)"
                ) from None
            raise ListenError(f"--listen {self._listen}: {exc.strerror or exc}") from None
        self._server = server
        # No poll interval: an idle sidecar should not wake up at all; stop() wakes the loop with a connection.
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": None}, name="status-http", daemon=True
        )
        self._thread.start()

    def open_connections(self) -> int:
        """Connections accepted and not yet closed (at most ``max_connections``)."""
        return self._server.open_connections() if self._server is not None else 0

    def stop(self) -> None:
        """Stop serving and close the socket; safe to call twice."""
        server, thread = self._server, self._thread
        self._server, self._thread = None, None
        if server is not None:
            stopper = threading.Thread(target=server.shutdown, name="status-http-stop", daemon=True)
            stopper.start()
            host, port = str(server.server_address[0]), int(server.server_address[1])
            with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
                pass  # wakes serve_forever's blocking select so it sees the shutdown request
            stopper.join(timeout=2)
            server.server_close()
        if thread is not None:
            thread.join(timeout=2)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        checks = self._checks
        registry = self._registry

        class Handler(_Limits):
            server_version = "haproxy-monitor"
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes: on a keep-alive connection (Prometheus keeps one) Nagle
            # would hold the body until the client's delayed ACK of the headers, 40 ms per scrape.
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                self.answering()
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    # Honour Accept like prometheus_client's own server (OpenMetrics when asked).
                    encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                    self._send(200, content_type, encoder(registry))
                    return
                check = checks.get(path)
                if check is None:
                    self._json(404, {"error": f"no such endpoint {path}; try /healthz, /readyz, /metrics"})
                    return
                try:
                    ok, detail = check()
                except Exception as exc:  # a broken check must answer 500, not kill the thread
                    self._json(500, {"error": f"{path} check raised {type(exc).__name__}: {exc}"})
                    return
                self._json(200 if ok else 503, detail)

            def do_HEAD(self) -> None:
                self.do_GET()

            def _json(self, code: int, body: dict[str, Any]) -> None:
                data = (json.dumps(body, default=str, sort_keys=True) + "\n").encode()
                self._send(code, "application/json", data)

            def _send(self, code: int, content_type: str, data: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")
                self.within_deadline()
                self.end_headers()
                if self.command != "HEAD":
                    self.within_deadline()
                    self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                # Scrapes every few seconds would drown the event log; the loop logs state changes.
                return

        return Handler
