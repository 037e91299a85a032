"""KubeWatcher: list+watch Nodes or the kubernetes EndpointSlice, with fallback and credential reload."""

from __future__ import annotations

import json
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from monitor.adapters.kube.client import Api, Client, credential_files
from monitor.adapters.kube.errors import (
    ConfigError,
    Gone,
    Interrupted,
    KubeError,
    RequestFailed,
    StreamCut,
    Unauthorized,
    Unreachable,
)
from monitor.events import Connectivity, Objects

# The package's name, not this module's: the log formatter shows the last part as the subsystem ("kube").
_log = logging.getLogger("monitor.adapters.kube")

_PATHS = {
    "nodes": "/api/v1/nodes",
    "endpointslices": "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
}
_SLICE_SELECTOR = "kubernetes.io/service-name=kubernetes"


class KubeWatcher:
    """Delivers the API server's Node (or EndpointSlice) set as Objects events through *emit*."""

    def __init__(
        self,
        *,
        kubeconfig: Path,
        source: Literal["nodes", "endpointslices"],
        node_selector: str,
        fallback_server: str = "https://localhost:6443",
        relist_interval: float,
        emit: Callable[[Objects | Connectivity], None],
        request_timeout: float = 10.0,
        watch_timeout_range: tuple[float, float] = (300.0, 600.0),
        backoff: tuple[float, float] = (0.5, 30.0),
    ) -> None:
        if source not in _PATHS:
            raise ValueError(f"source must be 'nodes' or 'endpointslices', not {source!r}")
        self._kubeconfig = Path(kubeconfig)
        self._source = source
        self._selector = _SLICE_SELECTOR if source == "endpointslices" else node_selector
        self._fallback_server = fallback_server.rstrip("/")
        self._relist_interval = relist_interval
        self._emit_cb = emit
        self._watch_range = watch_timeout_range
        self._backoff = backoff
        self._probe_interval = max(0.5, relist_interval / 50)
        self._lock = threading.Lock()
        self._emit_lock = threading.Lock()
        self._halted = threading.Event()
        self._wake = threading.Event()
        self._api = Api(kubeconfig=self._kubeconfig, request_timeout=request_timeout)
        self._watch_restarts = 0
        self._objects: dict[str, tuple[Mapping[str, Any], str]] = {}
        self._last_fingerprint: frozenset[str] | None = None
        self._last_status: Connectivity | None = None
        self._server = ""
        self._fallback = False
        self._primary_error: str | None = None

    # -- public, thread-safe -----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Block until *stop* is set (or close() is called); never raises for API, network or config errors."""
        worker = threading.Thread(target=self._work, args=(stop,), name="kube-watcher", daemon=True)
        worker.start()

        # Wake on either stop.set() or close() without polling: an idle sidecar should not tick.
        def bridge_stop() -> None:
            stop.wait()
            self.close()

        bridge = threading.Thread(target=bridge_stop, name="kube-stop", daemon=True)
        bridge.start()
        self._halted.wait()
        self.close()
        # A worker stuck in DNS or a TCP connect cannot be interrupted: it is a daemon, exits on its own
        # timeout, and can no longer emit.
        worker.join(0.3)

    def close(self) -> None:
        with self._emit_lock:
            self._halted.set()
        self._wake.set()
        self._api.close()

    def reload_credentials(self) -> None:
        self._api.reload()
        self._wake.set()

    def credential_files(self) -> list[Path]:
        return credential_files(self._kubeconfig)

    def request_count(self) -> int:
        return self._api.request_count()

    def watch_restarts(self) -> int:
        """Watch streams re-opened without a relist (timeouts, cut streams): for metrics."""
        with self._lock:
            return self._watch_restarts

    # -- worker ------------------------------------------------------------------------------------------

    def _stopped(self, stop: threading.Event) -> bool:
        return stop.is_set() or self._halted.is_set()

    def _work(self, stop: threading.Event) -> None:
        attempt = 0
        while not self._stopped(stop):
            try:
                self._sync(stop)
                attempt = 0
                continue
            except Interrupted:
                continue
            except ConfigError as exc:
                self._status(
                    Connectivity(reachable=False, fallback=False, server=self._server, error=str(exc))
                )
            except Unauthorized as exc:
                self._api.forget()
                self._status(
                    Connectivity(
                        reachable=False, fallback=self._fallback, server=self._server, error=str(exc)
                    )
                )
            except KubeError as exc:
                self._status(
                    Connectivity(
                        reachable=False, fallback=self._fallback, server=self._server, error=str(exc)
                    )
                )
            except Exception as exc:  # never let a bug kill discovery: report it and retry
                _log.exception("kube watcher: unexpected error")
                self._status(
                    Connectivity(
                        reachable=False,
                        fallback=self._fallback,
                        server=self._server,
                        error=f"kubeconfig {self._kubeconfig}: unexpected {type(exc).__name__}: {exc}",
                    )
                )
            self._sleep(self._delay(attempt))
            attempt += 1

    def _delay(self, attempt: int) -> float:
        base, cap = self._backoff
        return float(min(cap, base * 2**attempt) * random.uniform(0.5, 1.0))

    def _sleep(self, seconds: float) -> None:
        self._wake.clear()
        if self._api.reload_pending():
            return
        if not self._halted.is_set():
            self._wake.wait(seconds)

    def _sync(self, stop: threading.Event) -> None:
        """One list followed by watches until a relist is due; raises KubeError when a server cannot serve."""
        client = self._api.credentials()
        self._server = self._server or client.primary
        server, fallback, body = self._list_somewhere(client)
        items = body.get("items") or []
        rv = str((body.get("metadata") or {}).get("resourceVersion") or "")
        self._server, self._fallback = server, fallback
        self._replace_all(items)
        self._status(
            Connectivity(reachable=True, fallback=fallback, server=server, error=self._primary_error)
        )
        self._publish(server, fallback)
        relist_at = time.monotonic() + self._relist_interval
        next_probe = time.monotonic() + self._probe_interval
        cuts = 0
        first_watch = True
        while not self._stopped(stop):
            now = time.monotonic()
            if now >= relist_at:
                return
            if self._api.reload_pending():
                new = self._api.credentials()
                if new.primary != client.primary:
                    return
                client = new
            if fallback and now >= next_probe:
                if self._api.probe(client, client.primary):
                    self._primary_error = None
                    return
                next_probe = time.monotonic() + self._probe_interval
            budget = relist_at - now
            if fallback:
                budget = min(budget, max(1.0, next_probe - now))
            # Rounded up so the watch ends at (not just before) the relist: no 1-second stub watch in between.
            timeout = max(1, math.ceil(min(budget, random.uniform(*self._watch_range))))
            if not first_watch:
                with self._lock:
                    self._watch_restarts += 1
            first_watch = False
            try:
                rv = self._watch(client, server, fallback, rv, timeout, stop)
                cuts = 0
            except StreamCut:
                self._sleep(self._delay(cuts))
                cuts += 1
            except Unreachable:
                # The server went away between list and watch: list again, there or on the other server.
                self._sleep(self._delay(cuts))
                return
            except Interrupted:
                if self._stopped(stop):
                    return
            except Gone:
                return

    def _list_somewhere(self, client: Client) -> tuple[str, bool, dict[str, Any]]:
        servers = [client.primary]
        if self._fallback_server and self._fallback_server != client.primary:
            servers.append(self._fallback_server)
        errors: list[str] = []
        for server in servers:
            try:
                body = self._api.get_json(client, server, self._path(), {"labelSelector": self._selector})
            except Unreachable as exc:
                errors.append(str(exc))
                continue
            fallback = server != client.primary
            self._primary_error = f"primary {errors[0]}" if fallback and errors else None
            return server, fallback, body
        self._server = servers[0]
        raise Unreachable(f"kubeconfig {self._kubeconfig}: " + "; fallback ".join(errors))

    def _path(self) -> str:
        return _PATHS[self._source]

    def _watch(
        self, client: Client, server: str, fallback: bool, rv: str, timeout: int, stop: threading.Event
    ) -> str:
        query = {
            "watch": "1",
            "resourceVersion": rv,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout),
            "labelSelector": self._selector,
        }
        resp = self._api.request(client, server, self._path(), query, read_timeout=self._api.request_timeout)
        # Headers came within request_timeout; the body may then stay quiet until the server's own timeout.
        conn = getattr(resp, "connection", None)
        if conn is not None and conn.sock is not None:
            conn.sock.settimeout(timeout + self._api.request_timeout)
        complete = False
        try:
            for line in _lines(resp):
                if not line.strip():
                    continue
                rv = self._apply(json.loads(line), rv)
                if self._stopped(stop):
                    raise Interrupted()
                self._publish(server, fallback)
            complete = True
        except (Interrupted, Gone, RequestFailed):
            raise
        except ValueError:
            raise StreamCut() from None
        except Exception:
            if self._api.interrupted():
                raise Interrupted() from None
            raise StreamCut() from None
        finally:
            if not complete:
                # A stream abandoned midway must not go back to the pool with unread bytes on it.
                resp.close()
            resp.release_conn()
        return rv

    def _apply(self, event: Any, rv: str) -> str:
        if not isinstance(event, dict):
            raise RequestFailed("watch event is not a JSON object")
        etype = event.get("type")
        obj = event.get("object") or {}
        if etype == "ERROR":
            if obj.get("code") == 410:
                raise Gone(f"watch: {obj.get('message', 'resourceVersion expired')}")
            raise RequestFailed(f"watch error {obj.get('code')}: {obj.get('message')}")
        meta = obj.get("metadata") or {}
        new_rv = str(meta.get("resourceVersion") or rv)
        if etype in ("ADDED", "MODIFIED"):
            self._store(obj)
        elif etype == "DELETED":
            self._objects.pop(_key(obj), None)
        return new_rv

    # -- state and emission ------------------------------------------------------------------------------

    def _replace_all(self, items: list[Any]) -> None:
        self._objects = {}
        for item in items:
            if isinstance(item, dict):
                self._store(item)

    def _store(self, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        # Field managers and the node's image list are large and never used to pick backends.
        meta.pop("managedFields", None)
        status = obj.get("status")
        if isinstance(status, dict):
            status.pop("images", None)
        self._objects[_key(obj)] = (obj, _fingerprint(obj))

    def _publish(self, server: str, fallback: bool) -> None:
        fingerprint = frozenset(fp for _, fp in self._objects.values())
        if fingerprint == self._last_fingerprint:
            return
        self._last_fingerprint = fingerprint
        objects = tuple(obj for _, (obj, _fp) in sorted(self._objects.items()))
        self._emit(Objects(items=objects, server=server, fallback=fallback))

    def _status(self, status: Connectivity) -> None:
        if status == self._last_status:
            return
        self._last_status = status
        if status.error and not status.reachable:
            _log.warning("kubernetes API: %s", status.error)
        self._emit(status)

    def _emit(self, item: Objects | Connectivity) -> None:
        with self._emit_lock:
            if self._halted.is_set():
                return
            self._emit_cb(item)


def _lines(resp: Any) -> Iterator[bytes]:
    buf = b""
    for chunk in resp.stream(amt=None, decode_content=True):
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield line
    if buf.strip():
        yield buf


def _key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def _fingerprint(obj: Mapping[str, Any]) -> str:
    """The object's content minus what changes without meaning (versions, heartbeats, envelope)."""
    meta = {
        k: v for k, v in (obj.get("metadata") or {}).items() if k not in ("resourceVersion", "managedFields")
    }
    # List items carry no kind/apiVersion while watch objects do: compare without them.
    view = {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}
    view["metadata"] = meta
    status = obj.get("status")
    if isinstance(status, dict) and isinstance(status.get("conditions"), list):
        conditions = [
            {k: v for k, v in c.items() if k != "lastHeartbeatTime"} if isinstance(c, dict) else c
            for c in status["conditions"]
        ]
        view["status"] = dict(status, conditions=conditions)
    return json.dumps(view, sort_keys=True, separators=(",", ":"))
