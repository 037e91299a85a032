"""The Kubernetes API client: kubeconfig and credentials, connection pools that can be cut, and one GET request."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import urllib3
import urllib3.connection
import yaml

from monitor.adapters.kube.errors import (
    ConfigError,
    Interrupted,
    KubeError,
    RequestFailed,
    Unreachable,
    describe,
    error_for_status,
    one_line,
    status_message,
)
from monitor.adapters.kube.official import k8s_configuration, k8s_rest, kube_config

_USER_AGENT = "haproxy-monitor/0.1"


@dataclass(frozen=True)
class Client:
    """Credentials as loaded from the kubeconfig once, and the server it names (the primary)."""

    rest: Any  # kubernetes.client.rest.RESTClientObject (untyped)
    config: Any  # kubernetes.client.Configuration (untyped)
    primary: str


class Api:
    """GET requests to API servers with the credentials of one kubeconfig; reload and close cut those in flight.

    Thread-safe where it says so; everything else belongs to the one thread that sends the requests.
    """

    def __init__(self, *, kubeconfig: Path, request_timeout: float) -> None:
        self.kubeconfig = kubeconfig
        self.request_timeout = request_timeout
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._reload = False
        self._requests = 0
        self._client: Client | None = None
        self._conns: weakref.WeakSet[urllib3.connection.HTTPConnection] = weakref.WeakSet()

    # -- thread-safe -------------------------------------------------------------------------------------

    def close(self) -> None:
        """Refuse every further request and cut those in flight (they raise Interrupted)."""
        self._closed.set()
        self._abort_requests()

    def reload(self) -> None:
        """Read the kubeconfig again before the next request, and cut the requests made with the old one."""
        with self._lock:
            self._reload = True
        # The running watch holds a connection made with the old credentials: end it so the new ones are used now.
        self._abort_requests()

    def reload_pending(self) -> bool:
        with self._lock:
            return self._reload

    def interrupted(self) -> bool:
        """Whether a request that failed just now was cut on purpose (close or reload) rather than by the network."""
        return self._closed.is_set() or self.reload_pending()

    def request_count(self) -> int:
        with self._lock:
            return self._requests

    # -- the requesting thread ---------------------------------------------------------------------------

    def credentials(self) -> Client:
        """The loaded credentials, (re)loaded from the kubeconfig when none are loaded or a reload is pending."""
        with self._lock:
            reload, self._reload = self._reload, False
        if reload:
            self.forget()
        if self._client is None:
            self._client = self._load()
        return self._client

    def forget(self) -> None:
        """Drop the loaded credentials (the server rejected them): the next credentials() reads the files."""
        client, self._client = self._client, None
        if client is not None:
            # Pooled connections carry the old TLS identity: close them so the next handshake reads the files.
            client.rest.pool_manager.clear()

    def request(
        self, client: Client, server: str, path: str, query: Mapping[str, str], *, read_timeout: float
    ) -> Any:
        """Send one GET; returns the urllib3 response (body unread) for 2xx, raises a KubeError otherwise."""
        url = server + path + ("?" + urlencode(query) if query else "")
        headers = {"Accept": "application/json", "User-Agent": _USER_AGENT}
        try:
            auth = client.config.auth_settings().get("BearerToken")
        except Exception as exc:
            raise ConfigError(f"kubeconfig {self.kubeconfig}: token: {one_line(exc)}") from None
        if auth and auth.get("value"):
            headers["Authorization"] = auth["value"]
        with self._lock:
            self._requests += 1
        if self._closed.is_set():
            raise Interrupted()
        try:
            wrapped = client.rest.request(
                "GET", url, headers=headers, _request_timeout=(self.request_timeout, read_timeout)
            )
        except Exception as exc:
            if self.interrupted():
                raise Interrupted() from None
            raise Unreachable(describe(exc, server=server, timeout=self.request_timeout)) from None
        resp = wrapped.response
        if 200 <= resp.status < 300:
            return resp
        detail = status_message(resp)
        resp.release_conn()
        raise error_for_status(
            resp.status, server=server, path=path, detail=detail, kubeconfig=self.kubeconfig
        )

    def get_json(self, client: Client, server: str, path: str, query: Mapping[str, str]) -> dict[str, Any]:
        """GET a JSON object."""
        resp = self.request(client, server, path, query, read_timeout=self.request_timeout)
        try:
            data = resp.data
        except Exception as exc:
            resp.close()
            if self.interrupted():
                raise Interrupted() from None
            raise Unreachable(describe(exc, server=server, timeout=self.request_timeout)) from None
        finally:
            resp.release_conn()
        try:
            body = json.loads(data)
        except ValueError:
            raise RequestFailed(f"{server}: {path} answered something that is not JSON") from None
        if not isinstance(body, dict):
            raise RequestFailed(f"{server}: {path} answered JSON that is not an object")
        return body

    def probe(self, client: Client, server: str) -> bool:
        """Whether *server* answers /readyz with 2xx within a few seconds."""
        try:
            resp = self.request(client, server, "/readyz", {}, read_timeout=min(self.request_timeout, 3.0))
        except (KubeError, Interrupted):
            return False
        try:
            resp.data  # noqa: B018 - drain the body so the connection can be reused
        except Exception:
            return False
        finally:
            resp.release_conn()
        return True

    # -- internals ---------------------------------------------------------------------------------------

    def _load(self) -> Client:
        cfg = k8s_configuration.Configuration()
        try:
            kube_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=str(self.kubeconfig), client_configuration=cfg, persist_config=False
            )
        except Exception as exc:  # the loader raises anything from ConfigException to TypeError on bad input
            # It words a missing file as "Invalid kube-config file. No configuration found.": say what it is.
            if not self.kubeconfig.exists():
                raise ConfigError(f"kubeconfig {self.kubeconfig} does not exist") from None
            if self.kubeconfig.is_dir():
                raise ConfigError(f"kubeconfig {self.kubeconfig} is a directory, not a file") from None
            raise ConfigError(f"kubeconfig {self.kubeconfig}: {one_line(exc)}") from None
        host = str(cfg.host or "").rstrip("/")
        if not host.startswith("https://"):
            raise ConfigError(
                f"kubeconfig {self.kubeconfig}: server {host or '(none)'} must be an https:// URL"
            )
        cfg.verify_ssl = True  # insecure-skip-tls-verify is ignored on purpose
        cfg.retries = False  # one attempt per request; the watcher decides when to retry and where
        rest = k8s_rest.RESTClientObject(cfg)
        rest.pool_manager.pool_classes_by_scheme = _tracking_pools(self._conns)
        return Client(rest=rest, config=cfg, primary=host)

    def _abort_requests(self) -> None:
        for conn in list(self._conns):
            sock = conn.sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)


def credential_files(kubeconfig: Path) -> list[Path]:
    """The kubeconfig and the files its current context references (CA, client cert and key, token file)."""
    files = [kubeconfig]
    try:
        doc = yaml.safe_load(kubeconfig.read_text())
        base = kubeconfig.parent
        ctx_name = doc.get("current-context")
        ctx = _named(doc.get("contexts"), ctx_name).get("context") or {}
        cluster = _named(doc.get("clusters"), ctx.get("cluster")).get("cluster") or {}
        user = _named(doc.get("users"), ctx.get("user")).get("user") or {}
        refs = [cluster.get("certificate-authority")]
        refs += [user.get("client-certificate"), user.get("client-key"), user.get("tokenFile")]
    except (OSError, yaml.YAMLError, AttributeError, TypeError):
        return files
    for ref in refs:
        if isinstance(ref, str) and ref:
            path = Path(ref) if Path(ref).is_absolute() else base / ref
            if path not in files:
                files.append(path)
    return files


def _named(entries: Any, name: Any) -> dict[str, Any]:
    for entry in entries or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            return entry
    return {}


def _tracking_pools(conns: weakref.WeakSet[urllib3.connection.HTTPConnection]) -> dict[str, Any]:
    """Connection pools whose connections register themselves, so close() can shut their sockets down."""

    class _HTTPSConnection(urllib3.connection.HTTPSConnection):
        def connect(self) -> None:
            conns.add(self)
            super().connect()

    class _HTTPConnection(urllib3.connection.HTTPConnection):
        def connect(self) -> None:
            conns.add(self)
            super().connect()

    class _HTTPSPool(urllib3.HTTPSConnectionPool):
        ConnectionCls = _HTTPSConnection

    class _HTTPPool(urllib3.HTTPConnectionPool):
        ConnectionCls = _HTTPConnection

    return {"http": _HTTPPool, "https": _HTTPSPool}
