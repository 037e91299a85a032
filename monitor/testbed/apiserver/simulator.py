"""KubeSim: the simulated API server's control surface (start and stop, credentials, objects, faults, counters)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from monitor.testbed import pki
from monitor.testbed.apiserver.connections import RequestRecord
from monitor.testbed.apiserver.faults import END_WATCH, EXPIRE, HANG, REFUSE, STATUS500, TRICKLE
from monitor.testbed.apiserver.handler import RequestHandler
from monitor.testbed.apiserver.objects import (
    ENDPOINTSLICES,
    NODES,
    Obj,
    changed_node,
    heartbeat,
    kubernetes_slice,
    node,
    replace_node_parts,
)
from monitor.testbed.apiserver.server import ServerThread, Shared


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
        self.ca = ca or pki.make_ca(directory, name="kubesim-ca")
        self.server_cert = server_cert or pki.make_server_cert(
            self.ca, directory, name="kubesim-apiserver", hosts=[host, *extra_names]
        )
        self.tokens: dict[str, str] = dict(tokens or {})
        self.bookmark_interval = bookmark_interval
        # What the request threads share, under one condition: a watch waits on it for a new event,
        # a fault switch, a cut or a stop.
        self._shared = Shared.empty(self)
        self._store, self._faults = self._shared.store, self._shared.faults
        self._connections, self._requests = self._shared.connections, self._shared.requests
        self._serving: ServerThread | None = None

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> KubeSim:
        if self._serving is None:
            address = (self.host, self._requested_port)
            self._serving = ServerThread(
                address,
                shared=self._shared,
                server_cert=self.server_cert,
                client_ca=self.ca,
                handler=RequestHandler,
            )
        return self

    def stop(self) -> None:
        serving, self._serving = self._serving, None
        if serving is not None:
            serving.stop()

    def __enter__(self) -> KubeSim:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._serving is None:
            raise RuntimeError("kubesim is not started")
        return self._serving.port

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
        return self._connections.cut_streams()

    def end_streams(self) -> int:
        """End every open watch stream as its timeout would (a final empty chunk); returns how many were open."""
        return self._connections.end_streams()

    def open_streams(self) -> int:
        return self._connections.stream_count()

    def request_count(self, kind: str | None = None) -> int:
        """Requests seen (all kinds, or one of list/watch/get/other/rejected)."""
        return self._requests.count(kind)

    def request_log(self) -> list[RequestRecord]:
        return self._requests.records()

    def tls_errors(self) -> list[str]:
        """Reasons of failed TLS handshakes (e.g. an expired or foreign client certificate)."""
        return self._requests.tls_errors()
