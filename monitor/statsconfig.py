"""Pure: where a rendered haproxy.cfg offers HAProxy's statistics (admin sockets in ``global``, stats pages)."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field

# Keywords that open a section; HAProxy recognises them by keyword, not by indentation.
SECTIONS = frozenset(
    {
        "global", "defaults", "frontend", "backend", "listen", "peers", "resolvers", "userlist", "mailers",
        "program", "http-errors", "ring", "cache", "log-forward", "crt-store", "traces",
    }
)  # fmt: skip
# Any of these in a frontend/listen section turns its stats page on (HAProxy enables stats implicitly).
_STATS_ON = frozenset({"enable", "uri", "auth", "realm", "refresh"})
# Address prefixes of binds that are not plain TCP on an IP address.
_NOT_TCP = (
    "/",
    "unix@",
    "abns@",
    "fd@",
    "sockpair@",
    "uxst@",
    "uxdg@",
    "udp@",
    "udp4@",
    "udp6@",
    "quic4@",
    "quic6@",
)
DEFAULT_STATS_URI = "/haproxy?stats"  # HAProxy's default when a section enables stats without `stats uri`


@dataclass(frozen=True)
class StatsPage:
    """A stats page reachable over plain HTTP on this host; ``url`` never carries the credentials."""

    host: str  # where to connect: the bind address, loopback for wildcard binds
    port: int
    uri: str
    user: str = ""
    password: str = field(default="", repr=False)
    section: str = ""  # e.g. "listen stats", for messages

    @property
    def csv_target(self) -> str:
        """The request target that asks HAProxy for CSV (``URI;csv``)."""
        return self.uri if ";csv" in self.uri else self.uri + ";csv"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{self.csv_target}"


@dataclass(frozen=True)
class StatsEndpoints:
    """Everything a config offers, in file order: unix admin sockets first choice, then stats pages."""

    sockets: tuple[str, ...] = ()
    pages: tuple[StatsPage, ...] = ()


def words(line: str) -> list[str]:
    """Split one config line like HAProxy does: blanks separate, quotes group, backslash escapes, # comments."""
    out: list[str] = []
    cur: list[str] = []
    quote: str | None = None
    started = False  # a quoted empty string is still a word
    i = 0
    while i < len(line):
        c = line[i]
        if quote is not None:
            if c == quote:
                quote = None
            elif c == "\\" and quote == '"' and i + 1 < len(line):
                i += 1
                cur.append(line[i])
            else:
                cur.append(c)
        elif c in "\"'":
            quote, started = c, True
        elif c == "\\" and i + 1 < len(line):
            i += 1
            cur.append(line[i])
            started = True
        elif c == "#":
            break
        elif c.isspace():
            if started:
                out.append("".join(cur))
                cur, started = [], False
        else:
            cur.append(c)
            started = True
        i += 1
    if started:
        out.append("".join(cur))
    return out


def _connect_host(host: str) -> str:
    """Where this host reaches a listener bound to ``host``: wildcards are reached on loopback."""
    if host in ("", "*", "0.0.0.0"):
        return "127.0.0.1"
    if host in ("::", "[::]"):
        return "::1"
    return host.removeprefix("[").removesuffix("]")


def _bind_addresses(args: list[str]) -> list[tuple[str, int]]:
    """TCP (host, port) pairs of one ``bind`` line; unix sockets, TLS and unusual forms are left out."""
    if not args or "ssl" in args[1:]:
        return []  # plain HTTP only: a TLS stats page would need certificates we do not have
    found = []
    for address in args[0].split(","):
        for prefix in ("ipv4@", "ipv6@", "tcp@", "tcp4@", "tcp6@"):
            address = address.removeprefix(prefix)
        if address.startswith(_NOT_TCP) or "$" in address or ":" not in address:
            continue
        host, _, port_text = address.rpartition(":")
        port_text = port_text.split("-", 1)[0]  # a port range: the first port is bound like the others
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            continue
        found.append((_connect_host(host), int(port_text)))
    return found


@dataclass
class _Proxy:
    kind: str
    name: str
    mode: str
    binds: list[tuple[str, int]] = field(default_factory=list)
    stats: bool = False
    uri: str = DEFAULT_STATS_URI
    auth: tuple[str, str] | None = None
    disabled: bool = False


def stats_endpoints(text: str) -> StatsEndpoints:
    """Read a rendered haproxy.cfg: ``stats socket PATH`` lines in ``global`` and HTTP stats pages.

    A stats page is a ``frontend``/``listen`` section in HTTP mode that enables stats (``stats enable``, ``stats
    uri``, ``stats auth`` …) and binds a TCP address; its first ``stats auth USER:PASS`` gives the credentials.
    Only unix-socket admin sockets given by absolute path are returned (that is what the runtime API reader
    speaks).
    """
    sockets: list[str] = []
    proxies: list[_Proxy] = []
    section = ""
    default_mode = "tcp"  # HAProxy's own default
    proxy: _Proxy | None = None
    for line in text.splitlines():
        w = words(line)
        if not w:
            continue
        if w[0] in SECTIONS:
            section = w[0]
            proxy = None
            if section in ("frontend", "listen"):
                proxy = _Proxy(kind=section, name=w[1] if len(w) > 1 else "", mode=default_mode)
                proxies.append(proxy)
            continue
        if section == "global" and w[:2] == ["stats", "socket"] and len(w) > 2:
            path = w[2].removeprefix("unix@")
            if path.startswith("/"):
                sockets.append(path)
        elif section == "defaults" and w[0] == "mode" and len(w) > 1:
            default_mode = w[1]
        elif proxy is not None:
            _proxy_line(proxy, w)
    pages = tuple(
        StatsPage(
            host=host,
            port=port,
            uri=p.uri,
            user=p.auth[0] if p.auth else "",
            password=p.auth[1] if p.auth else "",
            section=f"{p.kind} {p.name}".strip(),
        )
        for p in proxies
        if p.stats and p.mode == "http" and not p.disabled
        for host, port in p.binds
    )
    return StatsEndpoints(sockets=tuple(sockets), pages=pages)


def _proxy_line(proxy: _Proxy, w: list[str]) -> None:
    if w[0] == "mode" and len(w) > 1:
        proxy.mode = w[1]
    elif w[0] == "bind":
        proxy.binds.extend(_bind_addresses(w[1:]))
    elif w[0] == "disabled":
        proxy.disabled = True
    elif w[0] == "stats" and len(w) > 1 and w[1] in _STATS_ON:
        proxy.stats = True
        if w[1] == "uri" and len(w) > 2:
            proxy.uri = w[2]
        elif w[1] == "auth" and len(w) > 2 and proxy.auth is None and ":" in w[2]:
            user, _, password = w[2].partition(":")
            proxy.auth = (user, password)


def page_from_url(url: str) -> StatsPage:
    """``http://[USER:PASS@]HOST:PORT/URI`` (``;csv`` optional) → StatsPage; ValueError says what is wrong."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port or 80
    except ValueError as exc:
        raise ValueError(f"{redact_url(url)!r} is not a URL: {exc}") from None
    if parts.scheme != "http":
        raise ValueError(f"{redact_url(url)!r}: only http:// stats pages are supported")
    if not parts.hostname:
        raise ValueError(f"{redact_url(url)!r}: no host")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return StatsPage(
        host=parts.hostname,
        port=port,
        uri=target,
        user=urllib.parse.unquote(parts.username or ""),
        password=urllib.parse.unquote(parts.password or ""),
        section="--stats-url",
    )


def redact_url(url: str) -> str:
    """The URL with any password replaced, for error messages."""
    scheme, sep, rest = url.partition("://")
    netloc, slash, path = rest.partition("/")
    userinfo, at, host = netloc.rpartition("@")
    if sep and at and ":" in userinfo:
        return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}{slash}{path}"
    return url
