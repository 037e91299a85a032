"""A simulated Kubernetes API server (nodes, endpointslices) speaking the real wire protocol, for tests and demos."""

from __future__ import annotations

import base64
import bisect
import contextlib
import copy
import json
import socket
import ssl
import struct
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from monitor.testbed import pki

Obj = dict[str, Any]

NODES = "nodes"
ENDPOINTSLICES = "endpointslices"
_DEFAULT_WATCH_TIMEOUT = 1800.0
_KIND = {NODES: ("v1", "Node"), ENDPOINTSLICES: ("discovery.k8s.io/v1", "EndpointSlice")}


class SelectorError(ValueError):
    """A label or field selector the simulator does not understand."""


@dataclass(frozen=True)
class _Requirement:
    key: str
    op: str  # "=", "!=", "exists", "!exists"
    value: str = ""

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.op == "exists":
            return self.key in labels
        if self.op == "!exists":
            return self.key not in labels
        if self.op == "=":
            return labels.get(self.key) == self.value
        return labels.get(self.key) != self.value


def parse_selector(text: str) -> tuple[_Requirement, ...]:
    """Parse the equality-based selector forms ``k=v``, ``k==v``, ``k!=v``, ``k=``, ``k``, ``!k``; comma = AND."""
    reqs: list[_Requirement] = []
    for raw in text.split(","):
        term = raw.strip()
        if not term:
            continue
        if "(" in term or " in " in term or " notin " in term:
            raise SelectorError(f"unsupported set-based selector term {term!r}")
        if term.startswith("!"):
            reqs.append(_Requirement(term[1:].strip(), "!exists"))
        elif "!=" in term:
            key, value = term.split("!=", 1)
            reqs.append(_Requirement(key.strip(), "!=", value.strip()))
        elif "=" in term:
            key, value = term.split("==", 1) if "==" in term else term.split("=", 1)
            reqs.append(_Requirement(key.strip(), "=", value.strip()))
        else:
            reqs.append(_Requirement(term, "exists"))
        if not reqs[-1].key:
            raise SelectorError(f"selector term {term!r} has no key")
    return tuple(reqs)


def _selector_matches(reqs: Sequence[_Requirement], labels: Mapping[str, str]) -> bool:
    return all(r.matches(labels) for r in reqs)


@dataclass(frozen=True)
class RequestRecord:
    """One request as the simulator saw it; *user* is the client-cert CN, the token's user, or ``""``."""

    user: str
    method: str
    path: str
    kind: str  # list | watch | get | other | rejected


@dataclass
class _Event:
    rv: int
    type: str
    obj: Obj
    prev: Obj | None


@dataclass
class _Collection:
    objects: dict[tuple[str, str], Obj] = field(default_factory=dict)
    events: list[_Event] = field(default_factory=list)
    event_rvs: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class _Query:
    resource: str
    namespace: str | None
    name: str | None
    labels: tuple[_Requirement, ...]
    field_name: str | None

    def matches(self, obj: Obj | None) -> bool:
        if obj is None:
            return False
        meta = obj["metadata"]
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        if self.field_name is not None and meta["name"] != self.field_name:
            return False
        return _selector_matches(self.labels, meta.get("labels") or {})


def _status(code: int, reason: str, message: str) -> Obj:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


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
        self._rv = 1
        self._horizon = 1
        self._collections: dict[str, _Collection] = {NODES: _Collection(), ENDPOINTSLICES: _Collection()}
        self._fault: str | None = None
        self._stopping = False
        self._stream_gen = 0
        self._end_gen = 0
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
        obj: Obj = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "uid": str(uuid.uuid4()),
                "creationTimestamp": _now(),
                "labels": dict(labels or {}),
                "annotations": dict(annotations or {}),
            },
            "spec": {},
            "status": {
                "addresses": [{"type": t, "address": a} for t, a in addresses],
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "lastHeartbeatTime": _now(),
                        "lastTransitionTime": _now(),
                    }
                ],
            },
        }
        return self._put(NODES, ("", name), obj)

    def update_node(
        self,
        name: str,
        *,
        labels: Mapping[str, str] | None = None,
        addresses: Iterable[tuple[str, str]] | None = None,
        annotations: Mapping[str, str] | None = None,
    ) -> int:
        """Replace the given parts of a Node (None = keep); returns the new resourceVersion."""
        with self._cond:
            old = self._collections[NODES].objects.get(("", name))
            if old is None:
                raise KeyError(f"node {name!r} does not exist")
            obj = copy.deepcopy(old)
            if labels is not None:
                obj["metadata"]["labels"] = dict(labels)
            if annotations is not None:
                obj["metadata"]["annotations"] = dict(annotations)
            if addresses is not None:
                obj["status"]["addresses"] = [{"type": t, "address": a} for t, a in addresses]
            return self._put(NODES, ("", name), obj)

    def touch_node(self, name: str) -> int:
        """Bump the Ready condition's heartbeat, like a kubelet status update that changes nothing relevant."""
        with self._cond:
            old = self._collections[NODES].objects.get(("", name))
            if old is None:
                raise KeyError(f"node {name!r} does not exist")
            obj = copy.deepcopy(old)
            for cond in obj["status"].get("conditions", []):
                cond["lastHeartbeatTime"] = f"{_now()[:-1]}.{time.monotonic_ns() % 10**9:09d}Z"
            return self._put(NODES, ("", name), obj)

    def delete_node(self, name: str) -> int:
        return self._delete(NODES, ("", name))

    def set_endpoint_addresses(self, addresses: Sequence[str], *, port: int = 6443) -> int:
        """Make ``default/kubernetes`` list *addresses*, like API servers holding a lease; [] deletes no slice."""
        family = "IPv6" if any(":" in a for a in addresses) else "IPv4"
        obj: Obj = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "kubernetes",
                "namespace": "default",
                "labels": {"kubernetes.io/service-name": "kubernetes"},
            },
            "addressType": family,
            "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in addresses],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
        }
        with self._cond:
            old = self._collections[ENDPOINTSLICES].objects.get(("default", "kubernetes"))
            if old is not None:
                obj["metadata"]["uid"] = old["metadata"]["uid"]
                obj["metadata"]["creationTimestamp"] = old["metadata"]["creationTimestamp"]
            else:
                obj["metadata"]["uid"] = str(uuid.uuid4())
                obj["metadata"]["creationTimestamp"] = _now()
            return self._put(ENDPOINTSLICES, ("default", "kubernetes"), obj)

    def objects(self, resource: str) -> list[Obj]:
        """A deep copy of the current objects of *resource* (``nodes`` or ``endpointslices``)."""
        with self._cond:
            return copy.deepcopy(list(self._collections[resource].objects.values()))

    @property
    def resource_version(self) -> int:
        with self._cond:
            return self._rv

    def compact(self) -> int:
        """Forget history: every resourceVersion handed out so far becomes too old (410 Gone)."""
        with self._cond:
            self._rv += 1
            self._horizon = self._rv
            for coll in self._collections.values():
                coll.events.clear()
                coll.event_rvs.clear()
            self._cond.notify_all()
            return self._rv

    def _put(self, resource: str, key: tuple[str, str], obj: Obj) -> int:
        with self._cond:
            coll = self._collections[resource]
            prev = coll.objects.get(key)
            self._rv += 1
            obj["metadata"]["resourceVersion"] = str(self._rv)
            coll.objects[key] = obj
            self._record(coll, _Event(self._rv, "MODIFIED" if prev else "ADDED", obj, prev))
            return self._rv

    def _delete(self, resource: str, key: tuple[str, str]) -> int:
        with self._cond:
            coll = self._collections[resource]
            prev = coll.objects.pop(key, None)
            if prev is None:
                raise KeyError(f"{resource} {key[1]!r} does not exist")
            self._rv += 1
            gone = copy.deepcopy(prev)
            gone["metadata"]["resourceVersion"] = str(self._rv)
            self._record(coll, _Event(self._rv, "DELETED", gone, prev))
            return self._rv

    def _record(self, coll: _Collection, event: _Event) -> None:
        coll.events.append(event)
        coll.event_rvs.append(event.rv)
        self._cond.notify_all()

    # -- control API: faults and counters ----------------------------------------------------------------

    def refuse(self) -> None:
        """Reset every new connection and every request on a kept-alive one; cut open watches."""
        self._set_fault("refuse")
        self.cut_streams()

    def status500(self) -> None:
        """Answer every request with 500 Internal Server Error."""
        self._set_fault("status500")

    def hang(self) -> None:
        """Accept connections and read requests but never answer (until the fault is cleared)."""
        self._set_fault("hang")

    def clear_faults(self) -> None:
        self._set_fault(None)

    def _set_fault(self, fault: str | None) -> None:
        with self._cond:
            self._fault = fault
            self._cond.notify_all()

    def cut_streams(self) -> int:
        """Close every open watch stream abruptly (no final chunk); returns how many were cut."""
        with self._cond:
            streams = list(self._streams)
            self._stream_gen += 1
            self._cond.notify_all()
        for sock in streams:
            _abort(sock)
        return len(streams)

    def end_streams(self) -> int:
        """End every open watch stream as the server does when its timeout is up (a final empty chunk, the
        connection kept); returns how many were open."""
        with self._cond:
            self._end_gen += 1
            self._cond.notify_all()
            return len(self._streams)

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

    # -- internals used by the handler -----------------------------------------------------------------

    def _list(self, query: _Query, rv_param: str | None, limit: int, cont: str | None) -> tuple[int, Obj]:
        with self._cond:
            start_after = ""
            if cont:
                try:
                    token = json.loads(base64.urlsafe_b64decode(cont.encode()))
                    token_rv, start_after = int(token["rv"]), str(token["start"])
                except (ValueError, KeyError, TypeError):
                    return 400, _status(400, "BadRequest", "invalid continue token")
                if token_rv < self._horizon:
                    return 410, _status(410, "Expired", "The provided continue parameter is too old")
            if rv_param not in (None, "", "0") and int(rv_param or 0) < self._horizon:
                return 410, _status(410, "Expired", f"too old resource version: {rv_param} ({self._horizon})")
            coll = self._collections[query.resource]
            matching = sorted(
                (o for o in coll.objects.values() if query.matches(o)),
                key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]),
            )
            if start_after:
                matching = [o for o in matching if self._sort_key(o) > start_after]
            meta: Obj = {"resourceVersion": str(self._rv)}
            if limit > 0 and len(matching) > limit:
                rest = len(matching) - limit
                matching = matching[:limit]
                token_text = json.dumps({"rv": self._rv, "start": self._sort_key(matching[-1])})
                meta["continue"] = base64.urlsafe_b64encode(token_text.encode()).decode()
                meta["remainingItemCount"] = rest
            items = []
            for o in matching:
                item = copy.deepcopy(o)
                item.pop("kind", None)
                item.pop("apiVersion", None)
                items.append(item)
        api_version, kind = _KIND[query.resource]
        return 200, {"kind": f"{kind}List", "apiVersion": api_version, "metadata": meta, "items": items}

    @staticmethod
    def _sort_key(obj: Obj) -> str:
        return f"{obj['metadata'].get('namespace', '')}/{obj['metadata']['name']}"

    def _get(self, query: _Query) -> tuple[int, Obj]:
        with self._cond:
            key = (query.namespace or "", query.name or "")
            obj = self._collections[query.resource].objects.get(key)
            if obj is None:
                return 404, _status(404, "NotFound", f'{query.resource} "{query.name}" not found')
            return 200, copy.deepcopy(obj)


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
            fault = sim._fault
        if fault == "refuse":
            _abort(raw)
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

    def _send_json(self, code: int, body: Obj) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

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
            fault = sim._fault
        if fault == "refuse":
            self.close_connection = True
            _abort(self.connection)
            return
        parts = urlsplit(self.path)
        params = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        user = self._user()
        kind = _request_kind(parts.path, params, method)
        if fault == "hang":
            sim._count(RequestRecord(user or "", method, self.path, kind))
            with sim._cond:
                while sim._fault == "hang" and not sim._stopping:
                    sim._cond.wait(1.0)
            self.close_connection = True
            _abort(self.connection)
            return
        if fault == "status500":
            sim._count(RequestRecord(user or "", method, self.path, kind))
            self._send_json(500, _status(500, "InternalError", "simulated internal error"))
            return
        if user is None:
            sim._count(RequestRecord("", method, self.path, "rejected"))
            self._send_json(401, _status(401, "Unauthorized", "Unauthorized"))
            return
        sim._count(RequestRecord(user, method, self.path, kind))
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
            self._send_json(404, _status(404, "NotFound", "the server could not find the requested resource"))
            return
        if method != "GET":
            self._send_json(405, _status(405, "MethodNotAllowed", "kubesim serves reads only"))
            return
        resource, namespace, name = route
        try:
            labels = parse_selector(params.get("labelSelector", ""))
            field_name = _field_name(params.get("fieldSelector", ""))
        except SelectorError as exc:
            self._send_json(400, _status(400, "BadRequest", str(exc)))
            return
        query = _Query(resource, namespace, name, labels, field_name if name is None else name)
        if name is not None and params.get("watch") not in ("1", "true"):
            self._send_json(*sim._get(query))
            return
        if params.get("watch") in ("1", "true"):
            self._watch(query, params)
            return
        try:
            limit = int(params.get("limit") or 0)
        except ValueError:
            self._send_json(400, _status(400, "BadRequest", "limit must be an integer"))
            return
        rv = params.get("resourceVersion")
        if rv not in (None, "") and not str(rv).isdigit():
            self._send_json(400, _status(400, "BadRequest", f"invalid resourceVersion {rv!r}"))
            return
        self._send_json(*sim._list(query, rv, limit, params.get("continue")))

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _event(self, etype: str, obj: Obj) -> None:
        self._chunk(json.dumps({"type": etype, "object": obj}).encode() + b"\n")

    def _watch(self, query: _Query, params: Mapping[str, str]) -> None:
        sim = self.server.sim
        rv_param = params.get("resourceVersion") or ""
        bookmarks = params.get("allowWatchBookmarks") in ("1", "true")
        try:
            timeout = float(params.get("timeoutSeconds") or _DEFAULT_WATCH_TIMEOUT)
            cursor = int(rv_param) if rv_param not in ("", "0") else -1
        except ValueError:
            self._send_json(400, _status(400, "BadRequest", "invalid resourceVersion or timeoutSeconds"))
            return
        api_version, kind = _KIND[query.resource]
        with sim._cond:
            # A cut between here and the registration below is seen through the generation: no stream escapes.
            gen, end_gen = sim._stream_gen, sim._end_gen
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        pending: list[tuple[str, Obj]] = []
        with sim._cond:
            sim._streams.add(self.connection)
            if 0 <= cursor < sim._horizon:
                expired = _status(410, "Expired", f"too old resource version: {cursor} ({sim._horizon})")
                pending.append(("ERROR", expired))
                cursor = -2
            elif cursor == -1:
                # No resourceVersion: like the real server, start with the current state as ADDED events.
                coll = sim._collections[query.resource]
                pending.extend(("ADDED", copy.deepcopy(o)) for o in coll.objects.values() if query.matches(o))
                cursor = sim._rv
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
                        if sim._stopping or sim._stream_gen != gen or sim._fault == "refuse":
                            self.close_connection = True
                            _abort(self.connection)
                            return
                        coll = sim._collections[query.resource]
                        start = bisect.bisect_right(coll.event_rvs, cursor)
                        if start < len(coll.events):
                            for ev in coll.events[start:]:
                                converted = _convert(ev, query)
                                if converted is not None:
                                    pending.append(converted)
                            cursor = coll.events[-1].rv
                            if pending:
                                break
                        now = time.monotonic()
                        if now >= deadline or sim._end_gen != end_gen:
                            deadline = min(deadline, now)
                            break
                        if bookmarks and now >= next_bookmark:
                            send_bookmark = True
                            cursor = max(cursor, sim._rv)
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


def _convert(ev: _Event, query: _Query) -> tuple[str, Obj] | None:
    now_matches = query.matches(ev.obj) if ev.type != "DELETED" else False
    was_matching = query.matches(ev.prev)
    if ev.type == "DELETED":
        return ("DELETED", copy.deepcopy(ev.obj)) if was_matching else None
    if now_matches:
        return ("MODIFIED" if was_matching else "ADDED", copy.deepcopy(ev.obj))
    if was_matching:
        # The object left the selection: a filtered watch reports it as gone, at this event's version.
        gone = copy.deepcopy(ev.prev)
        assert gone is not None
        gone["metadata"]["resourceVersion"] = str(ev.rv)
        return ("DELETED", gone)
    return None


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


def _field_name(text: str) -> str | None:
    name = None
    for term in filter(None, (t.strip() for t in text.split(","))):
        key, sep, value = term.partition("=")
        if not sep or key.strip() != "metadata.name":
            raise SelectorError(f"unsupported field selector {term!r} (only metadata.name=NAME)")
        name = value.lstrip("=").strip()
    return name


def _request_kind(path: str, params: Mapping[str, str], method: str) -> str:
    if method != "GET" or _route(path.rstrip("/")) is None:
        return "other"
    if params.get("watch") in ("1", "true"):
        return "watch"
    route = _route(path.rstrip("/"))
    return "get" if route is not None and route[2] is not None else "list"
