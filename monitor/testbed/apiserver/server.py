"""The TLS server on its thread: one thread per connection, the handshake (client certs verified), the refuse fault."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from monitor.testbed import pki
from monitor.testbed.apiserver.connections import Connections, RequestLog, RequestRecord, abort, linger_close
from monitor.testbed.apiserver.faults import REFUSE, Faults
from monitor.testbed.apiserver.store import Store


class Settings(Protocol):
    """What the request handlers read from the simulator on each use (a test may change it at any time)."""

    tokens: dict[str, str]  # bearer token → user
    bookmark_interval: float  # seconds between bookmarks on a watch that asked for them


@dataclass(frozen=True)
class Shared:
    """What the control methods and the request handlers share; *cond* guards all of it and wakes watches."""

    cond: threading.Condition
    store: Store
    faults: Faults
    connections: Connections
    requests: RequestLog
    settings: Settings

    @classmethod
    def empty(cls, settings: Settings) -> Shared:
        """An empty store, no fault, no connection; one condition that every part notifies."""
        # Reentrant (Condition's default RLock): a watch holds it while it reads the store and the faults.
        cond = threading.Condition(threading.RLock())
        return cls(cond, Store(cond), Faults(cond), Connections(cond), RequestLog(cond), settings)


class ServerThread:
    """The TLS server serving on its own thread until stopped; a stop also resets the connections left open."""

    def __init__(
        self,
        address: tuple[str, int],
        *,
        shared: Shared,
        server_cert: pki.CertPair,
        client_ca: pki.CertPair,
        handler: type[BaseHTTPRequestHandler],
    ) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(server_cert.cert), str(server_cert.key))
        ctx.load_verify_locations(cafile=str(client_ca.cert))
        # Optional so that token clients can connect; a presented certificate is still fully verified.
        ctx.verify_mode = ssl.CERT_OPTIONAL
        self._connections = shared.connections
        self._connections.serving()
        self._server = TLSServer(address, shared=shared, ctx=ctx, handler=handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="kubesim", daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def stop(self) -> None:
        self._connections.stop()
        self._server.shutdown()
        self._server.server_close()
        self._connections.abort_all()
        self._thread.join(timeout=5)


class TLSServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        *,
        shared: Shared,
        ctx: ssl.SSLContext,
        handler: type[BaseHTTPRequestHandler],
    ) -> None:
        self.shared = shared
        self.ctx = ctx
        self._handler = handler
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        shared = self.shared
        raw: socket.socket = request
        if shared.faults.mode == REFUSE:
            shared.requests.add(RequestRecord("", "", "", "refused", time.monotonic()))
            abort(raw)
            return
        raw.settimeout(10)
        # As Go's net package (so kube-apiserver) does: a watch's small chunks go out at once, not after the
        # client's delayed ACK of the previous one.
        with contextlib.suppress(OSError):
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            conn = self.ctx.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
        except OSError:
            raw.close()
            return
        try:
            conn.do_handshake()
        except (ssl.SSLError, OSError) as exc:
            shared.requests.handshake_failed(exc)
            linger_close(conn)
            return
        conn.settimeout(None)
        shared.connections.opened(conn)
        try:
            self._handler(conn, client_address, self)
        except (OSError, ValueError):
            pass
        finally:
            shared.connections.closed(conn)
            with contextlib.suppress(OSError):
                conn.close()
