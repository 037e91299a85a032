"""The Kubernetes API client: kubeconfig and credentials, connection pools that can be cut, and one GET request."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import urllib3
import urllib3.connection

from monitor.adapters.kube.credentials import SecretDir, load_kubeconfig, resolve
from monitor.adapters.kube.errors import (
    ConfigError,
    InsecureServer,
    Interrupted,
    KubeError,
    Malformed,
    Unreachable,
    describe,
    error_for_status,
    one_line,
    status_message,
)
from monitor.adapters.kube.official import k8s_configuration, k8s_rest, kube_config
from monitor.adapters.kube.pacing import Pacer, retry_after_seconds

_USER_AGENT = "haproxy-monitor/0.1"
_MiB = 1024 * 1024
_READ_BYTES = 64 * 1024  # one read of a body: small enough to check the deadline often


@dataclass(frozen=True)
class Limits:
    """What the adapter asks of API servers and accepts from them; the defaults are the production values."""

    rate: float = 1.0  # requests per second on average, over every retry path and server together
    burst: int = 3  # requests at once: a first list and watch (and a fallback's) go out without delay
    # The longest Retry-After honoured: a broken server cannot park the monitor for hours.
    retry_after_cap: float = 30.0
    list_bytes: int = 64 * _MiB  # one list body
    line_bytes: int = 16 * _MiB  # one watch event
    list_seconds: float = 60.0  # one list body, from its headers to its last byte


@dataclass(frozen=True)
class Client:
    """Credentials as loaded from the kubeconfig once, and the server it names (the primary)."""

    rest: Any  # kubernetes.client.rest.RESTClientObject (untyped)
    config: Any  # kubernetes.client.Configuration (untyped)
    primary: str
    secrets: Path | None = None  # the private copies of its CA, certificate and key; removed with it


class Api:
    """GET requests to API servers with the credentials of one kubeconfig; reload and close cut those in flight.

    Thread-safe where it says so; everything else belongs to the one thread that sends the requests.
    """

    def __init__(
        self,
        *,
        kubeconfig: Path,
        request_timeout: float,
        limits: Limits = Limits(),
        secrets: SecretDir | None = None,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.request_timeout = request_timeout
        self.limits = limits
        self.secrets = secrets or SecretDir()
        self._pacer = Pacer(rate=limits.rate, burst=limits.burst, clock=time.monotonic)
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._reload = False
        self._requests = 0
        self._client: Client | None = None
        self._conns: weakref.WeakSet[urllib3.connection.HTTPConnection] = weakref.WeakSet()

    # -- thread-safe -------------------------------------------------------------------------------------

    def close(self) -> None:
        """Refuse every further request, cut those in flight (they raise Interrupted), remove the key files."""
        self._closed.set()
        self._abort_requests()
        self.secrets.close()

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
            if client.secrets is not None:
                self.secrets.discard(client.secrets)

    def request(
        self, client: Client, server: str, path: str, query: Mapping[str, str], *, read_timeout: float
    ) -> Any:
        """Send one GET; returns the urllib3 response (body unread) for 2xx, raises a KubeError otherwise.

        Waits first for the pacer (the rate limit, the server's Retry-After); close() ends the wait.
        """
        if not server.startswith("https://"):
            # Neither credentials nor the answers that pick the backends may travel in clear.
            raise InsecureServer(f"server {server} is not https://: no request is sent without TLS")
        url = server + path + ("?" + urlencode(query) if query else "")
        headers = {"Accept": "application/json", "User-Agent": _USER_AGENT}
        try:
            auth = client.config.auth_settings().get("BearerToken")
        except Exception as exc:
            raise ConfigError(f"kubeconfig {self.kubeconfig}: token: {one_line(exc)}") from None
        if auth and auth.get("value"):
            headers["Authorization"] = auth["value"]
        with self._lock:
            wait = self._pacer.reserve(server)
        if self._closed.wait(wait) if wait > 0 else self._closed.is_set():
            raise Interrupted()
        with self._lock:
            self._requests += 1
        try:
            wrapped = client.rest.request(
                "GET", url, headers=headers, _request_timeout=(self.request_timeout, read_timeout)
            )
        except Exception as exc:
            if self.interrupted():
                raise Interrupted() from None
            raise Unreachable(describe(exc, server=server, timeout=self.request_timeout)) from None
        resp = wrapped.response
        if self.reload_pending():
            # The credentials changed while this request was connecting (a handshake not yet done has no socket
            # for reload() to cut): a watch opened now would keep the old identity until it times out.
            resp.close()
            resp.release_conn()
            raise Interrupted()
        if 200 <= resp.status < 300:
            return resp
        if resp.status in (429, 503):
            delay = retry_after_seconds(resp.headers.get("Retry-After"), cap=self.limits.retry_after_cap)
            if delay is not None:
                with self._lock:
                    self._pacer.retry_after(server, delay)
        detail = status_message(resp)
        # Only the start of the body was read: the connection cannot serve another request.
        resp.close()
        resp.release_conn()
        raise error_for_status(
            resp.status, server=server, path=path, detail=detail, kubeconfig=self.kubeconfig
        )

    def get_json(self, client: Client, server: str, path: str, query: Mapping[str, str]) -> dict[str, Any]:
        """GET a JSON object of at most limits.list_bytes, all of it within limits.list_seconds."""
        resp = self.request(client, server, path, query, read_timeout=self.request_timeout)
        complete = False
        try:
            data = self._body(resp, server=server, path=path)
            complete = True
        except Malformed:
            raise
        except Exception as exc:
            if self.interrupted():
                raise Interrupted() from None
            raise Unreachable(describe(exc, server=server, timeout=self.request_timeout)) from None
        finally:
            if not complete:
                resp.close()  # unread bytes must not go back to the pool
            resp.release_conn()
        try:
            body = json.loads(data)
        except ValueError:
            raise Malformed(f"{server}: {path}: an answer that is not JSON") from None
        if not isinstance(body, dict):
            raise Malformed(f"{server}: {path}: an answer that is not a JSON object")
        return body

    def _body(self, resp: Any, *, server: str, path: str) -> bytes:
        limit, seconds = self.limits.list_bytes, self.limits.list_seconds
        declared = str(resp.headers.get("Content-Length") or "")
        if declared.isdigit() and int(declared) > limit:
            raise Malformed(f"{server}: {path}: an answer of {declared} bytes, over the {_size(limit)} limit")
        deadline = time.monotonic() + seconds
        body = bytearray()
        while chunk := resp.read1(_READ_BYTES):
            body += chunk
            if len(body) > limit:
                raise Malformed(f"{server}: {path}: an answer over the {_size(limit)} limit")
            # Each read has the read timeout; a server that trickles bytes meets this deadline instead.
            if time.monotonic() > deadline:
                raise Malformed(f"{server}: {path}: the answer did not finish within {seconds:g} s")
        return bytes(body)

    def probe(self, client: Client, server: str) -> bool:
        """Whether *server* answers /readyz with 2xx within a few seconds."""
        try:
            resp = self.request(client, server, "/readyz", {}, read_timeout=min(self.request_timeout, 3.0))
        except (KubeError, Interrupted):
            return False
        try:
            # "ok" is all a ready server says: two reads at most (each within the read timeout), and a
            # connection with more to read is not reused.
            if resp.read1(_READ_BYTES) and resp.read1(1):
                resp.close()
        except Exception:
            resp.close()
            return False
        finally:
            resp.release_conn()
        return True

    # -- internals ---------------------------------------------------------------------------------------

    def _load(self) -> Client:
        # Every file is read here, bounded; the loader and TLS then read only the private copies.
        resolved = resolve(load_kubeconfig(self.kubeconfig), kubeconfig=self.kubeconfig)
        secrets = self.secrets.write(resolved.files)
        try:
            return self._client_from(resolved.place(secrets), secrets)
        except BaseException:
            self.secrets.discard(secrets)
            raise

    def _client_from(self, doc: dict[str, Any], secrets: Path) -> Client:
        cfg = k8s_configuration.Configuration()
        try:
            loader = kube_config.KubeConfigLoader(  # type: ignore[no-untyped-call]
                config_dict=doc, config_base_path=str(self.kubeconfig.parent), temp_file_path=str(secrets)
            )
            loader.load_and_set(cfg)  # type: ignore[no-untyped-call]
        except Exception as exc:  # the loader raises anything from ConfigException to TypeError on bad input
            raise ConfigError(f"kubeconfig {self.kubeconfig}: {one_line(exc)}") from None
        host = str(cfg.host or "").rstrip("/")
        if not host.startswith("https://"):
            raise InsecureServer(
                f"kubeconfig {self.kubeconfig}: server {host or '(none)'} is not https://: "
                "no request is sent without TLS"
            )
        cfg.verify_ssl = True  # insecure-skip-tls-verify is ignored on purpose
        cfg.retries = False  # one attempt per request; the watcher decides when to retry and where
        rest = k8s_rest.RESTClientObject(cfg)
        rest.pool_manager.pool_classes_by_scheme = _tracking_pools(self._conns)
        return Client(rest=rest, config=cfg, primary=host, secrets=secrets)

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
        doc = load_kubeconfig(kubeconfig)
        base = kubeconfig.parent
        ctx_name = doc.get("current-context")
        ctx = _named(doc.get("contexts"), ctx_name).get("context") or {}
        cluster = _named(doc.get("clusters"), ctx.get("cluster")).get("cluster") or {}
        user = _named(doc.get("users"), ctx.get("user")).get("user") or {}
        refs = [cluster.get("certificate-authority")]
        refs += [user.get("client-certificate"), user.get("client-key"), user.get("tokenFile")]
    except (ConfigError, AttributeError, TypeError):
        return files
    for ref in refs:
        if isinstance(ref, str) and ref:
            path = Path(ref) if Path(ref).is_absolute() else base / ref
            if path not in files:
                files.append(path)
    return files


def _size(limit: int) -> str:
    return f"{limit // _MiB} MiB" if limit % _MiB == 0 else f"{limit} bytes"


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
