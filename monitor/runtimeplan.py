"""Pure: whether a new haproxy.cfg differs from the live one only in backend servers, and the runtime plan if so."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from monitor.statsconfig import SECTIONS, words


@dataclass(frozen=True)
class ServerLine:
    """One ``server NAME ADDRESS:PORT KEYWORDS…`` line of a ``backend`` section."""

    backend: str
    name: str
    address: str  # an IP address, without brackets
    port: int
    keywords: tuple[str, ...] = ()  # the words after the address, as HAProxy splits them

    @property
    def endpoint(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"

    @property
    def key(self) -> str:
        return f"{self.backend}/{self.name}"


@dataclass(frozen=True)
class SetAddress:
    """``set server BACKEND/NAME addr A port P``: same server, same keywords, another address or port."""

    server: ServerLine


@dataclass(frozen=True)
class AddServer:
    """``add server`` with the rendered line's keywords, then ``enable health`` (when checked), ``enable server``."""

    server: ServerLine


@dataclass(frozen=True)
class RemoveServer:
    """Drain, wait for the sessions, ``state maint``, ``shutdown sessions server``, ``del server``."""

    server: ServerLine


Step = SetAddress | AddServer | RemoveServer


@dataclass(frozen=True)
class RuntimePlan:
    """The steps, in order (address changes, additions, removals: capacity first), and both sides to compare with.

    ``before`` and ``after`` hold every server of each backend a step touches, as the live and the new file
    declare them: HAProxy's own view is checked against ``before`` first and against ``after`` at the end.
    """

    steps: tuple[Step, ...]
    before: Mapping[str, tuple[ServerLine, ...]]
    after: Mapping[str, tuple[ServerLine, ...]]


@dataclass(frozen=True)
class NotRuntime:
    """The change needs a reload; ``reason`` is a short phrase for logs and the fallback metric's label."""

    reason: str
    detail: str = ""


class _Unparsable(ValueError):
    pass


@dataclass(frozen=True)
class _Parsed:
    skeleton: tuple[str, ...]  # every line but the backends' server lines, as written
    servers: dict[str, dict[str, ServerLine]]  # backend → name → line, in file order
    default_server: frozenset[str]  # backends a default-server line applies to ("" = every backend)


def _server_line(backend: str, w: list[str]) -> ServerLine:
    if len(w) < 3:
        raise _Unparsable(f"backend {backend}: server line without an address")
    host, sep, port_text = w[2].rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise _Unparsable(f"backend {backend}: server {w[1]} has no plain ADDRESS:PORT ({w[2]})")
    host = host.removeprefix("[").removesuffix("]")
    try:
        address = str(ipaddress.ip_address(host))
    except ValueError:
        raise _Unparsable(f"backend {backend}: server {w[1]} address {host!r} is not an IP address") from None
    return ServerLine(backend=backend, name=w[1], address=address, port=int(port_text), keywords=tuple(w[3:]))


def _parse(text: str) -> _Parsed:
    skeleton: list[str] = []
    servers: dict[str, dict[str, ServerLine]] = {}
    default_server: set[str] = set()
    section, backend = "", ""
    for line in text.splitlines():
        w = words(line)
        if w and w[0] in SECTIONS:
            section = w[0]
            backend = w[1] if section == "backend" and len(w) > 1 else ""
            if section == "backend":
                servers.setdefault(backend, {})
        elif w and w[0] == "default-server" and section in ("defaults", "backend"):
            default_server.add(backend)
        elif w and w[0] == "server" and section == "backend":
            server = _server_line(backend, w)
            if server.name in servers[backend]:
                raise _Unparsable(f"backend {backend}: server {server.name} declared twice")
            servers[backend][server.name] = server
            continue
        skeleton.append(line)
    return _Parsed(tuple(skeleton), servers, frozenset(default_server))


def plan(live: str, new: str) -> RuntimePlan | NotRuntime:
    """The runtime plan from the live config to ``new``, or why only a reload can get there.

    Runtime-applicable means: every line outside the ``server`` lines of ``backend`` sections is identical, and
    each server differs only in address and port (same keywords), or is added or removed. An added server needs
    a backend without ``default-server`` (HAProxy 2.6's dynamic servers do not inherit it).
    """
    try:
        old_cfg, new_cfg = _parse(live), _parse(new)
    except _Unparsable as exc:
        return NotRuntime("unparsable server line", str(exc))
    if old_cfg.skeleton != new_cfg.skeleton:
        return NotRuntime("not only servers changed")
    if old_cfg.servers.keys() != new_cfg.servers.keys():
        return NotRuntime("not only servers changed", "the backend sections differ")
    moves: list[Step] = []
    adds: list[Step] = []
    removes: list[Step] = []
    for backend, old_servers in old_cfg.servers.items():
        new_servers = new_cfg.servers[backend]
        for name, server in new_servers.items():
            was = old_servers.get(name)
            if was is None:
                if "" in new_cfg.default_server or backend in new_cfg.default_server:
                    return NotRuntime(
                        "default-server", f"backend {backend}: added servers would not inherit default-server"
                    )
                adds.append(AddServer(server))
            elif was.keywords != server.keywords:
                return NotRuntime("server keywords changed", f"server {server.key}")
            elif (was.address, was.port) != (server.address, server.port):
                moves.append(SetAddress(server))
        removes.extend(RemoveServer(s) for name, s in old_servers.items() if name not in new_servers)
    steps = (*moves, *adds, *removes)
    touched = {step.server.backend for step in steps}
    return RuntimePlan(
        steps=steps,
        before={b: tuple(old_cfg.servers[b].values()) for b in sorted(touched)},
        after={b: tuple(new_cfg.servers[b].values()) for b in sorted(touched)},
    )


def admin_socket(text: str) -> str | None:
    """The first ``stats socket PATH … level admin`` of ``global`` (a unix path), or None."""
    section = ""
    for line in text.splitlines():
        w = words(line)
        if not w:
            continue
        if w[0] in SECTIONS:
            section = w[0]
        elif section == "global" and w[:2] == ["stats", "socket"] and len(w) > 2:
            path = w[2].removeprefix("unix@")
            level = w[w.index("level") + 1] if "level" in w[3:-1] else "user"
            if path.startswith("/") and level == "admin":
                return path
    return None


def state_file(text: str) -> str | None:
    """The ``server-state-file`` of ``global`` as an absolute path (joined to ``server-state-base``), or None."""
    section, base, name = "", "", ""
    for line in text.splitlines():
        w = words(line)
        if not w:
            continue
        if w[0] in SECTIONS:
            section = w[0]
        elif section == "global" and len(w) > 1 and w[0] == "server-state-base":
            base = w[1]
        elif section == "global" and len(w) > 1 and w[0] == "server-state-file":
            name = w[1]
    if not name:
        return None
    path = name if name.startswith("/") else f"{base.rstrip('/')}/{name}" if base else ""
    return path if path.startswith("/") else None


def servers_of(text: str) -> dict[tuple[str, str], ServerLine]:
    """Every server of the backends of a config, by (backend, name); empty when a server line is unusual."""
    try:
        parsed = _parse(text)
    except _Unparsable:
        return {}
    return {(b, n): s for b, servers in parsed.servers.items() for n, s in servers.items()}


def carried_state(state: str, new: str) -> str:
    """The lines of ``show servers state`` a HAProxy starting from ``new`` may load.

    HAProxy 2.6 applies a state line's port (and admin state) over the config's: a server whose address or port
    the new config changes must start afresh, so only servers kept as they are carry their state over.
    """
    keep = servers_of(new)
    out = []
    for line in state.splitlines():
        cols = line.split()
        if not cols or line.startswith("#") or cols == ["1"]:
            out.append(line)
            continue
        if len(cols) < 19:
            continue
        server = keep.get((cols[1], cols[3]))
        if server is not None and (cols[4], cols[18]) == (server.address, str(server.port)):
            out.append(line)
    return "\n".join(out) + "\n"
