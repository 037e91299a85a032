"""KubeSim: the simulated API server's control surface (start and stop, credentials, objects, faults, counters)."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import struct
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from monitor.testbed import pki
from monitor.testbed.apiserver.faults import (
    END_WATCH,
    EXPIRE,
    HANG,
    REFUSE,
    STATUS500,
    THROTTLE,
    TRICKLE,
    Faults,
)
from monitor.testbed.apiserver.objects import (
    ENDPOINTSLICES,
    KIND,
    NODES,
    Obj,
    changed_node,
    heartbeat,
    kubernetes_slice,
    node,
    replace_node_parts,
    status,
)
from monitor.testbed.apiserver.selectors import Query, SelectorError, field_selector_name, parse_selector
from monitor.testbed.apiserver.store import Store

_DEFAULT_WATCH_TIMEOUT = 1800.0


@dataclass(frozen=True)
class RequestRecord:
    """One request as the simulator saw it; *user* is the client-cert CN, the token's user, or ``""``."""

    user: str
    method: str
    path: str
    kind: str  # list | watch | get | other | rejected | refused (a connection reset by the refuse fault)
    at: float = 0.0  # time.monotonic() when it arrived


class KubeSim:
    """An HTTPS API server with an in-memory store, controlled through thread-safe Python methods.

    Authentication: a client certificate signed by ``ca`` (user = CN) or a bearer token from *tokens*.
    """

    def __init__(
        self,
        *,
        directory: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        tokens: Mapping[str, str] | None = None,
        extra_names: Sequence[str] = (),
        bookmark_interval: float = 60.0,
        ca: pki.CertPair | None = None,
        server_cert: pki.CertPair | None = None,
    ) -> None:
        self.directory = directory
        self.host = host
        self._requested_port = port
        self.tokens: dict[str, str] = dict(tokens or {})
        self.bookmark_interval = bookmark_interval
        self.ca = ca or pki.make_ca(directory, name="kubesim-ca")
        self.server_cert = server_cert or pki.make_server_cert(
            self.ca, directory, name="kubesim-apiserver", hosts=[host, *extra_names]
        )
        self._cond = threading.Condition()
        self._store = Store(self._cond)
        self._faults = Faults(self._cond)
        self._stopping = False
        self._stream_gen = 0
        self._streams: set[socket.socket] = set()
        self._connections: set[socket.socket] = set()
        self._log: deque[RequestRecord] = deque(maxlen=20000)
        self._counts: dict[str, int] = {}
        self._tls_errors: deque[str] = deque(maxlen=200)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> KubeSim:
        if self._server is not None:
            return self
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(self.server_cert.cert), str(self.server_cert.key))
        ctx.load_verify_locations(cafile=str(self.ca.cert))
        # Optional so that token clients can connect; a presented certificate is still fully verified.
        ctx.verify_mode = ssl.CERT_OPTIONAL
        self._stopping = False
        self._server = _Server((self.host, self._requested_port), self, ctx)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="kubesim", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        server.shutdown()
        server.server_close()
        with self._cond:
            conns = list(self._connections)
        for conn in conns:
            _abort(conn)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> KubeSim:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("kubesim is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    # -- credentials helpers -----------------------------------------------------------------------------

    def client_cert(self, *, user: str, groups: Sequence[str] = (), expired: bool = False) -> pki.CertPair:
        """Issue a client certificate from this server's CA."""
        suffix = "-expired" if expired else ""
        return pki.make_client_cert(
            self.ca,
            self.directory / "clients",
            user=user,
            groups=groups,
            expired=expired,
            name=f"{user}{suffix}",
        )

    def write_kubeconfig(
        self,
        path: Path,
        *,
        user: str = "monitor",
        token: str | None = None,
        embed: bool = False,
        server: str | None = None,
    ) -> Path:
        """Write a kubeconfig for this server: a token if given (and registered), else a fresh client cert."""
        if token is not None:
            self.tokens.setdefault(token, user)
            return pki.write_kubeconfig(
                path, server=server or self.url, ca_cert=self.ca.cert, token=token, embed=embed, user=user
            )
        pair = self.client_cert(user=user)
        return pki.write_kubeconfig(
            path, server=server or self.url, ca_cert=self.ca.cert, client=pair, embed=embed, user=user
        )

    # -- control API: objects --------------------------------------------------------------------------

    def add_node(
        self,
        name: str,
        *,
        labels: Mapping[str, str] | None = None,
        addresses: Iterable[tuple[str, str]] = (),
        annotations: Mapping[str, str] | None = None,
    ) -> int:
        """Create (or replace) a Node; returns the new resourceVersion."""
        obj = node(name, labels=labels, addresses=addresses, annotations=annotations)
        return self._store.put(NODES, ("", name), lambda _old: obj)

    def update_node(
        self,
        name: str,
        *,
        labels: Mapping[str, str] | None = None,
        addresses: Iterable[tuple[str, str]] | None = None,
        annotations: Mapping[str, str] | None = None,
    ) -> int:
        """Replace the given parts of a Node (None = keep); returns the new resourceVersion."""
        change = replace_node_parts(labels=labels, addresses=addresses, annotations=annotations)
        return self._store.put(NODES, ("", name), changed_node(name, change))

    def touch_node(self, name: str) -> int:
        """Bump the Ready condition's heartbeat, like a kubelet status update that changes nothing relevant."""
        return self._store.put(NODES, ("", name), changed_node(name, heartbeat))

    def delete_node(self, name: str) -> int:
        return self._store.delete(NODES, ("", name))

    def set_endpoint_addresses(self, addresses: Sequence[str], *, port: int = 6443) -> int:
        """Make ``default/kubernetes`` list *addresses*, like API servers holding a lease; [] deletes no slice."""
        return self._store.put(
            ENDPOINTSLICES, ("default", "kubernetes"), kubernetes_slice(addresses, port=port)
        )

    def objects(self, resource: str) -> list[Obj]:
        """A deep copy of the current objects of *resource* (``nodes`` or ``endpointslices``)."""
        return self._store.objects(resource)

    @property
    def resource_version(self) -> int:
        return self._store.resource_version

    def compact(self) -> int:
        """Forget history: every resourceVersion handed out so far becomes too old (410 Gone)."""
        return self._store.compact()

    # -- control API: faults and counters ----------------------------------------------------------------

    def refuse(self) -> None:
        """Reset every new connection and every request on a kept-alive one; cut open watches."""
        self._faults.switch(REFUSE)
        self.cut_streams()

    def status500(self) -> None:
        """Answer every request with 500 Internal Server Error."""
        self._faults.switch(STATUS500)

    def hang(self) -> None:
        """Accept connections and read requests but never answer (until the fault is cleared)."""
        self._faults.switch(HANG)

    def expire_watches(self) -> None:
        """Answer every watch with a 410 Expired error event, as a server whose history is always too short."""
        self._faults.switch(EXPIRE)

    def end_watches(self) -> None:
        """End every watch at once: 200 and an empty stream, as a proxy that closes long requests."""
        self._faults.switch(END_WATCH)

    def throttle(self, *, retry_after: int) -> None:
        """Answer every request with 429 Too Many Requests and ``Retry-After: retry_after``."""
        self._faults.throttle(retry_after=retry_after)

    def trickle(self) -> None:
        """Send list bodies one byte every 0.2 s, as a server that never quite answers."""
        self._faults.switch(TRICKLE)

    def garble(self, *, lists: str | None = None, events: str | None = None) -> None:
        """Serve list bodies and watch events (not bookmarks) mangled as GARBLED_LISTS / GARBLED_EVENTS name it."""
        self._faults.garble(lists=lists, events=events)

    def clear_faults(self) -> None:
        """End every fault and every garbling."""
        self._faults.clear()

    def cut_streams(self) -> int:
        """Close every open watch stream abruptly (no final chunk); returns how many were cut."""
        with self._cond:
            streams = list(self._streams)
            self._stream_gen += 1
            self._cond.notify_all()
        for sock in streams:
            _abort(sock)
        return len(streams)

    def open_streams(self) -> int:
        with self._cond:
            return len(self._streams)

    def request_count(self, kind: str | None = None) -> int:
        """Requests seen (all kinds, or one of list/watch/get/other/rejected)."""
        with self._cond:
            if kind is None:
                return sum(self._counts.values())
            return self._counts.get(kind, 0)

    def request_log(self) -> list[RequestRecord]:
        with self._cond:
            return list(self._log)

    def tls_errors(self) -> list[str]:
        """Reasons of failed TLS handshakes (e.g. an expired or foreign client certificate)."""
        with self._cond:
            return list(self._tls_errors)

    def _count(self, record: RequestRecord) -> None:
        with self._cond:
            self._log.append(record)
            self._counts[record.kind] = self._counts.get(record.kind, 0) + 1


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], sim: KubeSim, ctx: ssl.SSLContext) -> None:
        self.sim = sim
        self.ctx = ctx
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        sim = self.sim
        raw: socket.socket = request
        with sim._cond:
            fault = sim._faults.mode
        if fault == REFUSE:
            sim._count(RequestRecord("", "", "", "refused", time.monotonic()))
            _abort(raw)
            return
        raw.settimeout(10)
        try:
            conn = self.ctx.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
        except OSError:
            raw.close()
            return
        try:
            conn.do_handshake()
        except (ssl.SSLError, OSError) as exc:
            with sim._cond:
                detail = getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or str(exc)
                sim._tls_errors.append(str(detail))
            _linger_close(conn)
            return
        conn.settimeout(None)
        with sim._cond:
            sim._connections.add(conn)
        try:
            _Handler(conn, client_address, self)
        except (OSError, ValueError):
            pass
        finally:
            with sim._cond:
                sim._connections.discard(conn)
                sim._streams.discard(conn)
            with contextlib.suppress(OSError):
                conn.close()


def _linger_close(sock: socket.socket) -> None:
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


def _abort(sock: socket.socket) -> None:
    """Close with RST: the peer sees a reset, not an orderly end of stream."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    connection: ssl.SSLSocket

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log."""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    # -- plumbing -------------------------------------------------------------------------------------

    def _user(self) -> str | None:
        peer: Any = self.connection.getpeercert()
        if peer:
            for rdn in peer.get("subject", ()):
                for key, value in rdn:
                    if key == "commonName":
                        return str(value)
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            return self.server.sim.tokens.get(auth[len("Bearer ") :].strip())
        return None

    def _send_json(self, code: int, body: Any, *, headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_list(self, code: int, body: Obj) -> None:
        sim = self.server.sim
        if code != 200:
            self._send_json(code, body)
            return
        garbled = sim._faults.garbled(body, event=False)
        with sim._cond:
            trickle = sim._faults.mode == TRICKLE
        if not trickle:
            self._send_json(code, garbled)
            return
        data = json.dumps(garbled).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        for i in range(len(data)):
            with sim._cond:
                if sim._stopping or sim._faults.mode != TRICKLE:
                    self.wfile.write(data[i:])
                    return
                sim._cond.wait(0.2)
            self.wfile.write(data[i : i + 1])
            self.wfile.flush()

    def _send_text(self, code: int, text: str) -> None:
        data = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _drain_body(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)

    def _dispatch(self, method: str) -> None:
        sim = self.server.sim
        self._drain_body()
        with sim._cond:
            fault = sim._faults.mode
        if fault == REFUSE:
            self.close_connection = True
            _abort(self.connection)
            return
        parts = urlsplit(self.path)
        params = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        user = self._user()
        kind = _request_kind(parts.path, params, method)
        if fault == HANG:
            sim._count(RequestRecord(user or "", method, self.path, kind, time.monotonic()))
            with sim._cond:
                while sim._faults.mode == HANG and not sim._stopping:
                    sim._cond.wait(1.0)
            self.close_connection = True
            _abort(self.connection)
            return
        if fault == STATUS500:
            sim._count(RequestRecord(user or "", method, self.path, kind, time.monotonic()))
            self._send_json(500, status(500, "InternalError", "simulated internal error"))
            return
        if fault == THROTTLE:
            sim._count(RequestRecord(user or "", method, self.path, kind, time.monotonic()))
            with sim._cond:
                retry_after = sim._faults.retry_after
            body = status(429, "TooManyRequests", "simulated overload: too many requests")
            self._send_json(429, body, headers={"Retry-After": str(retry_after)})
            return
        if user is None:
            sim._count(RequestRecord("", method, self.path, "rejected", time.monotonic()))
            self._send_json(401, status(401, "Unauthorized", "Unauthorized"))
            return
        sim._count(RequestRecord(user, method, self.path, kind, time.monotonic()))
        path = parts.path.rstrip("/") or "/"
        if path in ("/readyz", "/healthz", "/livez"):
            self._send_text(200, "ok")
            return
        if path == "/version":
            self._send_json(
                200, {"major": "1", "minor": "30", "gitVersion": "v1.30.0-kubesim", "platform": "sim"}
            )
            return
        route = _route(path)
        if route is None:
            self._send_json(404, status(404, "NotFound", "the server could not find the requested resource"))
            return
        if method != "GET":
            self._send_json(405, status(405, "MethodNotAllowed", "kubesim serves reads only"))
            return
        resource, namespace, name = route
        try:
            labels = parse_selector(params.get("labelSelector", ""))
            field_name = field_selector_name(params.get("fieldSelector", ""))
        except SelectorError as exc:
            self._send_json(400, status(400, "BadRequest", str(exc)))
            return
        query = Query(resource, namespace, name, labels, field_name if name is None else name)
        if name is not None and params.get("watch") not in ("1", "true"):
            self._send_json(*sim._store.get(query))
            return
        if params.get("watch") in ("1", "true"):
            self._watch(query, params)
            return
        try:
            limit = int(params.get("limit") or 0)
        except ValueError:
            self._send_json(400, status(400, "BadRequest", "limit must be an integer"))
            return
        rv = params.get("resourceVersion")
        if rv not in (None, "") and not str(rv).isdigit():
            self._send_json(400, status(400, "BadRequest", f"invalid resourceVersion {rv!r}"))
            return
        self._send_list(*sim._store.list_page(query, rv, limit, params.get("continue")))

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _event(self, etype: str, obj: Obj) -> None:
        event: Any = {"type": etype, "object": obj}
        if etype not in ("BOOKMARK", "ERROR"):
            event = self.server.sim._faults.garbled(event, event=True)
        self._chunk(json.dumps(event).encode() + b"\n")

    def _watch(self, query: Query, params: Mapping[str, str]) -> None:
        sim = self.server.sim
        rv_param = params.get("resourceVersion") or ""
        bookmarks = params.get("allowWatchBookmarks") in ("1", "true")
        try:
            timeout = float(params.get("timeoutSeconds") or _DEFAULT_WATCH_TIMEOUT)
            cursor = int(rv_param) if rv_param not in ("", "0") else -1
        except ValueError:
            self._send_json(400, status(400, "BadRequest", "invalid resourceVersion or timeoutSeconds"))
            return
        api_version, kind = KIND[query.resource]
        with sim._cond:
            # A cut between here and the registration below is seen through the generation: no stream escapes.
            gen = sim._stream_gen
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        pending: list[tuple[str, Obj]] = []
        with sim._cond:
            sim._streams.add(self.connection)
            fault = sim._faults.mode
            if fault == END_WATCH:
                cursor = -2
            elif fault == EXPIRE or 0 <= cursor < sim._store.horizon:
                horizon = sim._store.horizon
                expired = status(410, "Expired", f"too old resource version: {cursor} ({horizon})")
                pending.append(("ERROR", expired))
                cursor = -2
            elif cursor == -1:
                # No resourceVersion: like the real server, start with the current state as ADDED events.
                pending, cursor = sim._store.current(query)
        now = time.monotonic()
        deadline = now + timeout
        next_bookmark = now + sim.bookmark_interval
        try:
            for etype, obj in pending:
                self._event(etype, obj)
            if cursor == -2:
                self._chunk(b"")
                return
            while True:
                pending = []
                send_bookmark = False
                with sim._cond:
                    while True:
                        if sim._stopping or sim._stream_gen != gen or sim._faults.mode == REFUSE:
                            self.close_connection = True
                            _abort(self.connection)
                            return
                        pending, cursor = sim._store.changes_after(query, cursor)
                        if pending:
                            break
                        now = time.monotonic()
                        if now >= deadline:
                            break
                        if bookmarks and now >= next_bookmark:
                            send_bookmark = True
                            cursor = max(cursor, sim._store.resource_version)
                            break
                        wake = min(deadline, next_bookmark) if bookmarks else deadline
                        sim._cond.wait(max(0.0, wake - now))
                for etype, obj in pending:
                    self._event(etype, obj)
                if send_bookmark:
                    next_bookmark = time.monotonic() + sim.bookmark_interval
                    mark = {
                        "kind": kind,
                        "apiVersion": api_version,
                        "metadata": {"resourceVersion": str(cursor)},
                    }
                    self._event("BOOKMARK", mark)
                if time.monotonic() >= deadline:
                    self._chunk(b"")
                    return
        finally:
            with sim._cond:
                sim._streams.discard(self.connection)


def _route(path: str) -> tuple[str, str | None, str | None] | None:
    """(resource, namespace, name) for the resource paths the simulator serves."""
    segs = path.strip("/").split("/")
    if segs[:3] == ["api", "v1", "nodes"] and len(segs) in (3, 4):
        return NODES, None, segs[3] if len(segs) == 4 else None
    if segs[:3] == ["apis", "discovery.k8s.io", "v1"]:
        rest = segs[3:]
        if rest == ["endpointslices"]:
            return ENDPOINTSLICES, None, None
        if len(rest) in (3, 4) and rest[0] == "namespaces" and rest[2] == "endpointslices":
            return ENDPOINTSLICES, rest[1], rest[3] if len(rest) == 4 else None
    return None


def _request_kind(path: str, params: Mapping[str, str], method: str) -> str:
    if method != "GET" or _route(path.rstrip("/")) is None:
        return "other"
    if params.get("watch") in ("1", "true"):
        return "watch"
    route = _route(path.rstrip("/"))
    return "get" if route is not None and route[2] is not None else "list"
