"""The sidecar's own HTTP endpoint: /healthz, /readyz (JSON, 200/503) and /metrics (Prometheus text)."""

from __future__ import annotations

import contextlib
import errno
import json
import socket
import socketserver
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from prometheus_client.exposition import choose_encoder

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

Check = Callable[[], tuple[bool, dict[str, object]]]


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
    # Fail loudly when the port is held by a listener, but do not refuse a restart while old
    # connections sit in TIME_WAIT (SO_REUSEADDR on Linux does exactly that).
    allow_reuse_address = True

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], *, family: socket.AddressFamily
    ) -> None:
        self.address_family = family
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the FQDN of the bind address, which can stall on a host
        # whose DNS is down, exactly when health endpoints matter; the name is never used here.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)


class StatusServer:
    """Serves health, readiness and metrics from a daemon thread; start() binds, stop() joins."""

    def __init__(
        self,
        *,
        listen: str,
        healthz: Check,
        readyz: Check,
        registry: CollectorRegistry,
    ) -> None:
        self._listen = listen
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
            server = _Server((self._host, self._port), handler, family=family)
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

        class Handler(BaseHTTPRequestHandler):
            server_version = "haproxy-monitor"
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes: on a keep-alive connection (Prometheus keeps one) Nagle
            # would hold the body until the client's delayed ACK of the headers, 40 ms per scrape.
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
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
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                # Scrapes every few seconds would drown the event log; the loop logs state changes.
                return

        return Handler
