"""The request handler: the faults that answer first, authentication, routing, gets and lists (watches: watch.py)."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from monitor.testbed.apiserver.connections import RequestRecord, abort
from monitor.testbed.apiserver.faults import HANG, REFUSE, STATUS500, THROTTLE, TRICKLE
from monitor.testbed.apiserver.objects import ENDPOINTSLICES, NODES, Obj, status
from monitor.testbed.apiserver.selectors import Query, SelectorError, field_selector_name, parse_selector
from monitor.testbed.apiserver.server import TLSServer
from monitor.testbed.apiserver.watch import Watch

_DEFAULT_WATCH_TIMEOUT = 1800.0
# What kube-apiserver answers without credentials.
PUBLIC_PATHS = frozenset({"/readyz", "/healthz", "/livez", "/version"})


class RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: TLSServer
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

    # -- from request to answer ------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        shared = self.server.shared
        self._drain_body()
        fault = shared.faults.mode
        if fault == REFUSE:
            self.close_connection = True
            abort(self.connection)
            return
        parts = urlsplit(self.path)
        params = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        user = self._user()
        kind = _request_kind(parts.path, params, method)
        if fault in (HANG, STATUS500, THROTTLE):
            shared.requests.add(RequestRecord(user or "", method, self.path, kind, time.monotonic()))
            self._answer_fault(fault)
            return
        # kube-apiserver lets anyone read its health endpoints (system:public-info-viewer): HAProxy's
        # `option httpchk GET /readyz` carries no credentials.
        if user is None and parts.path not in PUBLIC_PATHS:
            shared.requests.add(RequestRecord("", method, self.path, "rejected", time.monotonic()))
            self._send_json(401, status(401, "Unauthorized", "Unauthorized"))
            return
        shared.requests.add(RequestRecord(user or "", method, self.path, kind, time.monotonic()))
        self._serve(method, parts.path.rstrip("/") or "/", params)

    def _answer_fault(self, fault: str) -> None:
        shared = self.server.shared
        if fault == HANG:
            with shared.cond:
                while shared.faults.mode == HANG and not shared.connections.stopping:
                    shared.cond.wait(1.0)
            self.close_connection = True
            abort(self.connection)
        elif fault == STATUS500:
            self._send_json(500, status(500, "InternalError", "simulated internal error"))
        else:
            body = status(429, "TooManyRequests", "simulated overload: too many requests")
            self._send_json(429, body, headers={"Retry-After": str(shared.faults.retry_after)})

    def _serve(self, method: str, path: str, params: Mapping[str, str]) -> None:
        if path in PUBLIC_PATHS - {"/version"}:
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
        if params.get("watch") in ("1", "true"):
            self._watch(query, params)
        elif name is not None:
            self._send_json(*self.server.shared.store.get(query))
        else:
            self._list(query, params)

    def _list(self, query: Query, params: Mapping[str, str]) -> None:
        try:
            limit = int(params.get("limit") or 0)
        except ValueError:
            self._send_json(400, status(400, "BadRequest", "limit must be an integer"))
            return
        rv = params.get("resourceVersion")
        if rv not in (None, "") and not str(rv).isdigit():
            self._send_json(400, status(400, "BadRequest", f"invalid resourceVersion {rv!r}"))
            return
        self._send_list(*self.server.shared.store.list_page(query, rv, limit, params.get("continue")))

    def _watch(self, query: Query, params: Mapping[str, str]) -> None:
        rv_param = params.get("resourceVersion") or ""
        try:
            timeout = float(params.get("timeoutSeconds") or _DEFAULT_WATCH_TIMEOUT)
            cursor = int(rv_param) if rv_param not in ("", "0") else -1
        except ValueError:
            self._send_json(400, status(400, "BadRequest", "invalid resourceVersion or timeoutSeconds"))
            return
        bookmarks = params.get("allowWatchBookmarks") in ("1", "true")
        Watch(self, self.server.shared, query, cursor=cursor, timeout=timeout, bookmarks=bookmarks).serve()

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
            return self.server.shared.settings.tokens.get(auth[len("Bearer ") :].strip())
        return None

    def _drain_body(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)

    def _send_json(self, code: int, body: Any, *, headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_text(self, code: int, text: str) -> None:
        data = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_list(self, code: int, body: Obj) -> None:
        shared = self.server.shared
        if code != 200:
            self._send_json(code, body)
            return
        garbled = shared.faults.garbled(body, event=False)
        if shared.faults.mode != TRICKLE:
            self._send_json(code, garbled)
            return
        data = json.dumps(garbled).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        for i in range(len(data)):
            with shared.cond:
                if shared.connections.stopping or shared.faults.mode != TRICKLE:
                    self.wfile.write(data[i:])
                    return
                shared.cond.wait(0.2)
            self.wfile.write(data[i : i + 1])
            self.wfile.flush()


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
