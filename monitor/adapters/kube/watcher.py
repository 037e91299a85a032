"""KubeWatcher: the thread that lists and watches, falls back to the local API server and returns, and emits the set."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from monitor.adapters.kube.client import Api, Client, Limits, credential_files
from monitor.adapters.kube.credentials import SecretDir
from monitor.adapters.kube.errors import (
    ConfigError,
    InsecureServer,
    Interrupted,
    KubeError,
    Unauthorized,
    Unreachable,
)
from monitor.adapters.kube.watching import (
    Change,
    Listing,
    Resource,
    WatchRequest,
    continuous_watch,
    list_objects,
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
        limits: Limits | None = None,
        secrets_dir: Path | None = None,
    ) -> None:
        """*secrets_dir*: where the private copies of the CA, client certificate and key live while the
        watcher runs ($XDG_RUNTIME_DIR, else the temp directory, when None); see credentials.SecretDir.
        """
        if source not in _PATHS:
            raise ValueError(f"source must be 'nodes' or 'endpointslices', not {source!r}")
        self._kubeconfig = Path(kubeconfig)
        selector = _SLICE_SELECTOR if source == "endpointslices" else node_selector
        self._resource = Resource(path=_PATHS[source], selector=selector)
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
        self._api = Api(
            kubeconfig=self._kubeconfig,
            request_timeout=request_timeout,
            limits=limits or Limits(),
            secrets=SecretDir(secrets_dir),
        )
        self._cache = _Cache()
        self._watch_restarts = 0
        self._last_status: Connectivity | None = None
        self._server = ""
        self._fallback = False

    # -- public, thread-safe -----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Block until *stop* is set (or close() is called); never raises for API, network or config errors.

        Removes at start what a killed run left of its key files, and at the end this run's.
        """
        try:
            self._api.secrets.sweep()
        except (OSError, KubeError) as exc:
            _log.warning("kubernetes API: cannot clean up %s: %s", self._api.secrets.base, exc)
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
                error, fallback = str(exc), False
            except Unauthorized as exc:
                self._api.forget()
                error, fallback = str(exc), self._fallback
            except KubeError as exc:
                error, fallback = str(exc), self._fallback
            except Exception as exc:  # never let a bug kill discovery: report it and retry
                _log.exception("kube watcher: unexpected error")
                error = f"kubeconfig {self._kubeconfig}: unexpected {type(exc).__name__}: {exc}"
                fallback = self._fallback
            self._status(Connectivity(reachable=False, fallback=fallback, server=self._server, error=error))
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
        server, fallback, listing, primary_error = self._list_somewhere(client)
        self._server, self._fallback = server, fallback
        self._cache.replace(listing.items)
        self._status(Connectivity(reachable=True, fallback=fallback, server=server, error=primary_error))
        self._publish(server, fallback)
        cycle = _Cycle(
            api=self._api,
            client=client,
            fallback=fallback,
            relist_at=time.monotonic() + self._relist_interval,
            probe_interval=self._probe_interval,
            watch_range=self._watch_range,
            reopened=self._count_restart,
        )
        changes = continuous_watch(
            self._api,
            server=server,
            resource=self._resource,
            since=listing.resource_version,
            stopped=lambda: self._stopped(stop),
            next_request=cycle.next_request,
            pause=lambda cuts: self._sleep(self._delay(cuts)),
        )
        with contextlib.closing(changes):
            for change in changes:
                self._cache.apply(change)
                self._publish(server, fallback)

    def _list_somewhere(self, client: Client) -> tuple[str, bool, Listing, str | None]:
        """List on the primary, else on the fallback server: (server, fallback, listing, why not the primary)."""
        servers = [client.primary]
        if self._fallback_server and self._fallback_server != client.primary:
            servers.append(self._fallback_server)
        errors: list[str] = []
        for server in servers:
            try:
                listing = list_objects(self._api, client, server=server, resource=self._resource)
            except (Unreachable, InsecureServer) as exc:
                errors.append(str(exc))
                continue
            fallback = server != client.primary
            return server, fallback, listing, f"primary {errors[0]}" if fallback and errors else None
        self._server = servers[0]
        raise Unreachable(f"kubeconfig {self._kubeconfig}: " + "; fallback ".join(errors))

    def _count_restart(self) -> None:
        with self._lock:
            self._watch_restarts += 1

    # -- emission ----------------------------------------------------------------------------------------

    def _publish(self, server: str, fallback: bool) -> None:
        items = self._cache.changed()
        if items is not None:
            self._emit(Objects(items=items, server=server, fallback=fallback))

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


class _Cycle:
    """One list's watches on one server: the credentials they use, how long each runs, and when to list again."""

    def __init__(
        self,
        *,
        api: Api,
        client: Client,
        fallback: bool,
        relist_at: float,
        probe_interval: float,
        watch_range: tuple[float, float],
        reopened: Callable[[], None],
    ) -> None:
        self._api = api
        self._client = client
        self._fallback = fallback
        self._relist_at = relist_at
        self._probe_interval = probe_interval
        self._next_probe = time.monotonic() + probe_interval
        self._watch_range = watch_range
        self._reopened = reopened
        self._watches = 0

    def next_request(self) -> WatchRequest | None:
        """The next watch, or None to list again: a relist is due, the primary changed, or it is back."""
        now = time.monotonic()
        if now >= self._relist_at:
            return None
        if self._api.reload_pending():
            client = self._api.credentials()
            if client.primary != self._client.primary:
                return None
            self._client = client
        if self._fallback and now >= self._next_probe:
            if self._api.probe(self._client, self._client.primary):
                return None
            self._next_probe = time.monotonic() + self._probe_interval
        budget = self._relist_at - now
        if self._fallback:
            budget = min(budget, max(1.0, self._next_probe - now))
        # Rounded up so the watch ends at (not just before) the relist: no 1-second stub watch in between.
        timeout = max(1, math.ceil(min(budget, random.uniform(*self._watch_range))))
        if self._watches:
            self._reopened()
        self._watches += 1
        return WatchRequest(client=self._client, timeout=timeout)


class _Cache:
    """The listed and watched objects by namespace/name, each with a fingerprint of what matters in it."""

    def __init__(self) -> None:
        self._objects: dict[str, tuple[Mapping[str, Any], str]] = {}
        self._published: frozenset[str] | None = None

    def replace(self, items: list[dict[str, Any]]) -> None:
        self._objects = {}
        for item in items:
            self._store(item)

    def apply(self, change: Change) -> None:
        if change.type in ("ADDED", "MODIFIED"):
            self._store(change.object)
        elif change.type == "DELETED":
            self._objects.pop(_key(change.object), None)

    def changed(self) -> tuple[Mapping[str, Any], ...] | None:
        """The objects sorted by key if they differ from the last call's, else None (heartbeats, bookmarks)."""
        fingerprint = frozenset(fp for _, fp in self._objects.values())
        if fingerprint == self._published:
            return None
        self._published = fingerprint
        return tuple(obj for _, (obj, _fp) in sorted(self._objects.items()))

    def _store(self, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        # Field managers and the node's image list are large and never used to pick backends.
        meta.pop("managedFields", None)
        status = obj.get("status")
        if isinstance(status, dict):
            status.pop("images", None)
        self._objects[_key(obj)] = (obj, _fingerprint(obj))


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
