"""Reads HAProxy's statistics, nothing else: ``show stat`` on the admin socket or the stats page's CSV, as rows."""

from __future__ import annotations

import base64
import csv
import enum
import operator
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from monitor.adapters.config_writer import MAX_CONFIG_BYTES
from monitor.adapters.tcp import connect
from monitor.boundedread import read_bounded
from monitor.logs import Log
from monitor.model import ServerState
from monitor.statsconfig import StatsPage, page_from_url, stats_endpoints

# A scrape must not hang on HAProxy: one deadline for the whole read, and a cap on what we accept (a few
# thousand servers' CSV is well under 1 MiB).
SCRAPE_TIMEOUT = 1.0
MAX_STATS_BYTES = 4 * 1024 * 1024

REQUIRED_COLUMNS = ("pxname", "svname", "status", "scur", "stot", "type")


class StatsParseError(ValueError):
    """``show stat`` output that is not HAProxy's CSV (wrong socket, old HAProxy, truncated reply)."""


class StatsSocketError(OSError):
    """The admin socket could not be read (retryable: HAProxy may be starting or reloading)."""


class StatsPageError(OSError):
    """The stats page could not be read: refused, wrong credentials, an error status, too slow or too big.

    ``permanent`` marks answers that waiting will not fix (wrong credentials or URI): reported as errors at once.
    """

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class StatsUnavailable(Exception):
    """No stats source answered; the message says which were tried and why each failed."""


class StatKind(enum.Enum):
    """HAProxy's ``type`` column."""

    FRONTEND = 0
    BACKEND = 1
    SERVER = 2
    LISTENER = 3


@dataclass(frozen=True)
class ServerStat:
    """One row of ``show stat``: a server, or a proxy's FRONTEND/BACKEND aggregate (see ``kind``)."""

    proxy: str
    server: str
    kind: StatKind
    status: str
    check_status: str  # e.g. L7OK, L4CON, INI; HAProxy's "* " (check running) prefix is removed
    current_sessions: int
    total_sessions: int
    weight: int | None
    address: str
    last_change_seconds: int | None
    check_failures: int | None
    check_in_progress: bool = False

    @property
    def is_frontend(self) -> bool:
        return self.kind is StatKind.FRONTEND

    @property
    def is_backend(self) -> bool:
        return self.kind is StatKind.BACKEND

    @property
    def is_server(self) -> bool:
        return self.kind is StatKind.SERVER

    @property
    def is_up(self) -> bool:
        """UP, including transitional "UP 1/3" states (HAProxy still sends traffic); also OPEN frontends."""
        return self.status.startswith("UP") or self.status == "OPEN" or self.status == "no check"

    def state(self) -> ServerState:
        """What the loop and /metrics follow of a server row."""
        return ServerState(self.proxy, self.server, self.status, self.check_status, self.current_sessions)


def _int(raw: str, name: str, *, line: int) -> int | None:
    if raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise StatsParseError(f"show stat line {line}: column {name!r} is {raw!r}, not an integer") from None


_KINDS = {kind.value: kind for kind in StatKind}


_WANTED = (
    "pxname",
    "svname",
    "status",
    "check_status",
    "scur",
    "stot",
    "weight",
    "addr",
    "lastchg",
    "chkfail",
    "type",
)


_Layout = tuple[int, Callable[[list[str]], tuple[str, ...]]]
_layouts: dict[str, _Layout] = {}
_LAYOUTS_MAX = 8
_LAYOUT_HEADER_MAX = 16 * 1024  # HAProxy's header is about 1.5 KiB; a longer one is parsed, not kept


def _header_layout(header: str) -> _Layout:
    """The header's column count and one C call that picks the wanted fields of a row, in ``_WANTED`` order.

    Remembered: HAProxy sends the same header on every read, every check interval. A column the header lacks
    is picked from the empty padding cell at index ``width``; when a name repeats, the first occurrence wins.
    """
    known = _layouts.get(header)
    if known is not None:
        return known
    columns = [c.strip() for c in header[2:].split(",")]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise StatsParseError(f"show stat: header lacks column(s) {', '.join(missing)}: {header[:80]!r}")
    index: dict[str, int] = {}
    for i, name in enumerate(columns):
        index.setdefault(name, i)
    width = len(columns)
    layout = width, operator.itemgetter(*(index.get(name, width) for name in _WANTED))
    if len(header) <= _LAYOUT_HEADER_MAX:
        if len(_layouts) >= _LAYOUTS_MAX:
            _layouts.clear()
        _layouts[header] = layout
    return layout


def parse_show_stat(text: str) -> list[ServerStat]:
    """Parse the CSV answer of ``show stat`` (first line ``# pxname,svname,...``).

    Raises StatsParseError naming the line and column on anything else. Runs every check interval and on
    every scrape: fields are taken by their column's index, not through a dict per row.
    """
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise StatsParseError("show stat: empty answer; is this HAProxy's admin socket?")
    header = lines[0]
    if not header.startswith("# "):
        raise StatsParseError(f"show stat: expected a '# pxname,svname,...' header, got {header[:80]!r}")
    width, pick = _header_layout(header)
    padding = [""] * (width + 1)
    out = []
    for number, fields in enumerate(csv.reader(lines[1:]), start=2):
        if len(fields) < len(REQUIRED_COLUMNS) or len(fields) > width + 1:
            raise StatsParseError(
                f"show stat line {number}: {len(fields)} fields for {width} columns: "
                f"{','.join(fields)[:80]!r}"
            )
        if len(fields) <= width:
            fields += padding[len(fields) :]
        pxname, svname, status, check, scur, stot, weight, addr, lastchg, chkfail, kind_text = pick(fields)
        kind_code = _int(kind_text, "type", line=number)
        kind = _KINDS.get(kind_code) if kind_code is not None else None
        if kind is None:
            raise StatsParseError(f"show stat line {number}: unknown type {kind_code!r}")
        out.append(
            ServerStat(
                proxy=pxname,
                server=svname,
                kind=kind,
                status=status,
                check_status=check.removeprefix("* "),
                current_sessions=_int(scur, "scur", line=number) or 0,
                total_sessions=_int(stot, "stot", line=number) or 0,
                weight=_int(weight, "weight", line=number),
                address=addr,
                last_change_seconds=_int(lastchg, "lastchg", line=number),
                check_failures=_int(chkfail, "chkfail", line=number),
                check_in_progress=check.startswith("* "),
            )
        )
    return out


def _mib(n: int) -> str:
    return f"{n / 1024 / 1024:g} MiB"


def read_stats(
    socket_path: Path, *, timeout: float = 2.0, max_bytes: int = MAX_STATS_BYTES
) -> list[ServerStat]:
    """Send ``show stat`` over HAProxy's admin socket and parse the answer, all within ``timeout`` seconds.

    Raises StatsSocketError when the socket cannot be used (also when the answer is slower than ``timeout`` or
    larger than ``max_bytes``), StatsParseError on an unexpected answer.
    """
    deadline = time.monotonic() + timeout
    chunks = []
    size = 0
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(socket_path))
            sock.sendall(b"show stat\n")
            while True:
                # Each recv may wait only for what is left, so a trickling answer cannot stretch the deadline.
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                sock.settimeout(left)
                chunk = sock.recv(65536)
                if not chunk:
                    break
                size += len(chunk)
                if size > max_bytes:
                    raise StatsSocketError(
                        f"stats socket {socket_path}: answer larger than {_mib(max_bytes)}; cut off"
                    )
                chunks.append(chunk)
    except StatsSocketError:
        raise
    except TimeoutError as exc:
        raise StatsSocketError(f"stats socket {socket_path}: no complete answer within the deadline") from exc
    except OSError as exc:
        raise StatsSocketError(f"stats socket {socket_path}: {exc.strerror or type(exc).__name__}") from exc
    return parse_show_stat(b"".join(chunks).decode(errors="replace"))


_MAX_HEAD = 65536


def _page_request(page: StatsPage) -> bytes:
    host = f"[{page.host}]" if ":" in page.host else page.host
    lines = [
        f"GET {page.csv_target} HTTP/1.0",
        f"Host: {host}:{page.port}",
        "Accept: text/csv",
        "Connection: close",
        "User-Agent: haproxy-monitor",
    ]
    if page.user or page.password:
        token = base64.b64encode(f"{page.user}:{page.password}".encode()).decode()
        lines.append(f"Authorization: Basic {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _split_answer(data: bytes, url: str) -> tuple[int, str, dict[str, str], bytes] | None:
    """(status, reason, lower-cased headers, body so far) once the header block is complete, else None."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise StatsPageError(f"stats page {url}: the answer is not HTTP: {lines[0][:60]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), parts[2] if len(parts) > 2 else "", headers, body


def _dechunk(body: bytes, url: str) -> bytes:
    out = bytearray()
    rest = body
    while True:
        size_line, sep, rest = rest.partition(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0], 16)
        except ValueError:
            raise StatsPageError(f"stats page {url}: broken chunked encoding") from None
        if not sep or size == 0:
            return bytes(out)
        out += rest[:size]
        rest = rest[size + 2 :]


def read_stats_page(
    page: StatsPage, *, timeout: float = 2.0, max_bytes: int = MAX_STATS_BYTES
) -> list[ServerStat]:
    """GET the stats page's CSV (``URI;csv``, HTTP basic auth when the page has credentials) and parse it.

    The whole exchange ends within ``timeout`` seconds (each wait is given only what is left of it); a body
    over ``max_bytes`` is refused. Raises StatsPageError (one line naming the URL, never the password) or
    StatsParseError. Plain HTTP/1.0 on one socket: it runs every check interval and on every scrape.
    """

    def left() -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        return remaining

    deadline = time.monotonic() + timeout
    too_big = f"stats page {page.url}: answer larger than {_mib(max_bytes)}; cut off"
    data = bytearray()
    answer = None
    expected: int | None = None
    body_start = 0
    try:
        with connect(page.host, page.port, left()) as sock:
            sock.settimeout(left())
            sock.sendall(_page_request(page))
            while True:
                sock.settimeout(left())
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
                if len(data) > max_bytes + _MAX_HEAD:
                    raise StatsPageError(too_big)
                if answer is None:
                    answer = _split_answer(bytes(data), page.url)
                    if answer is None:
                        if len(data) > _MAX_HEAD:
                            raise StatsPageError(
                                f"stats page {page.url}: no end of the HTTP header in 64 KiB"
                            )
                        continue
                    length = answer[2].get("content-length", "")
                    expected = int(length) if length.isdigit() else None
                    if expected is not None and expected > max_bytes:
                        raise StatsPageError(too_big)
                    body_start = len(data) - len(answer[3])
                if expected is not None and len(data) - body_start >= expected:
                    break  # complete, whether or not the server closes
    except StatsPageError:
        raise
    except TimeoutError as exc:
        raise StatsPageError(f"stats page {page.url}: no complete answer within the deadline") from exc
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise StatsPageError(f"stats page {page.url}: {reason}") from exc
    answer = _split_answer(bytes(data), page.url)
    if answer is None:
        raise StatsPageError(f"stats page {page.url}: the connection closed before a complete HTTP answer")
    status, reason, headers, body = answer
    if status == 401:
        who = f"user {page.user!r}" if page.user else "no credentials"
        raise StatsPageError(
            f"stats page {page.url}: HTTP 401, {who} refused; check the 'stats auth' user and password",
            permanent=True,
        )
    if status != 200:
        raise StatsPageError(
            f"stats page {page.url}: HTTP {status} {reason}; is {page.uri} the 'stats uri'?",
            permanent=status in (403, 404),
        )
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _dechunk(body, page.url)
    if len(body) > max_bytes:
        raise StatsPageError(too_big)
    return parse_show_stat(body.decode(errors="replace"))


@dataclass(frozen=True)
class _Candidate:
    """One place statistics may be read from, and where we learned of it."""

    description: str  # never holds a password
    origin: str
    read: Callable[[float, int], list[ServerStat]]


class StatsSource:
    """Reads HAProxy's statistics from the first source that answers; one log line whenever that changes.

    Sources, in order: ``--stats-socket`` and ``--stats-url`` when given (discovery is then off); otherwise what
    the config we rendered offers: its ``stats socket`` paths, then its stats pages (the pod shares the host
    network, so a page bound on this host is reachable even where the admin socket's directory is not
    shared). The config is parsed again only when the file changes. Safe to call from several threads.
    """

    def __init__(
        self,
        *,
        cfg: Path,
        socket_path: Path | None = None,
        url: str | None = None,
        max_bytes: int = MAX_STATS_BYTES,
    ) -> None:
        self.cfg = cfg
        self.max_bytes = max_bytes
        self._overrides: list[_Candidate] = []
        if socket_path is not None:
            self._overrides.append(self._socket(socket_path, origin="--stats-socket"))
        if url is not None:
            self._overrides.append(self._page(page_from_url(url), origin="--stats-url"))
        self._lock = threading.Lock()
        self._parsed_key: tuple[int, int, int] | None = None
        self._discovered: list[_Candidate] = []
        self._answered: str | None = None  # the discovered source that answered last: tried first next time
        self._reported: str | None = None
        self._worked = False
        self._log = Log("stats")

    @staticmethod
    def _socket(path: Path, *, origin: str) -> _Candidate:
        return _Candidate(
            description=f"socket {path}",
            origin=origin,
            read=lambda timeout, cap: read_stats(path, timeout=timeout, max_bytes=cap),
        )

    @staticmethod
    def _page(page: StatsPage, *, origin: str) -> _Candidate:
        user = f" (user {page.user})" if page.user else ""
        return _Candidate(
            description=f"page {page.url}{user}",
            origin=origin,
            read=lambda timeout, cap: read_stats_page(page, timeout=timeout, max_bytes=cap),
        )

    def _candidates(self) -> list[_Candidate]:
        """The sources to try, in order; raises StatsUnavailable when there is none."""
        if self._overrides:
            return list(self._overrides)
        try:
            st = os.stat(self.cfg)
        except OSError as exc:
            raise StatsUnavailable(
                f"{self.cfg}: {exc.strerror or exc} (not written yet?); "
                "no stats source known (--stats-socket/--stats-url not given)"
            ) from None
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            if key != self._parsed_key:
                try:
                    text = read_bounded(self.cfg, limit=MAX_CONFIG_BYTES).decode(errors="replace")
                except OSError as exc:
                    raise StatsUnavailable(f"{self.cfg}: {exc.strerror or exc}") from None
                found = stats_endpoints(text)
                origin = str(self.cfg)
                self._discovered = [self._socket(Path(p), origin=origin) for p in found.sockets] + [
                    self._page(p, origin=origin) for p in found.pages
                ]
                self._parsed_key = key
                self._answered = None  # a new config: its own order again (the socket first)
            discovered = list(self._discovered)
            if self._answered is not None:
                # In the pod layout the config's admin socket is out of reach: not tried again every cycle
                # while the page answers (until the page fails or the config changes).
                discovered.sort(key=lambda c: c.description != self._answered)
        if not discovered:
            raise StatsUnavailable(
                f"{self.cfg} has no 'stats socket' in global and no stats page "
                "(frontend/listen with 'stats enable' or 'stats uri' and a bind); "
                "use --stats-socket or --stats-url"
            )
        return discovered

    def read(self, *, timeout: float = SCRAPE_TIMEOUT) -> list[ServerStat]:
        """Rows from the first source that answers, all within ``timeout`` seconds; else StatsUnavailable."""
        deadline = time.monotonic() + timeout
        try:
            candidates = self._candidates()
        except StatsUnavailable as exc:
            self._report(None, str(exc))
            raise
        failed: list[str] = []
        permanent = False
        for candidate in candidates:
            left = deadline - time.monotonic()
            if left <= 0:
                failed.append(f"{candidate.description}: not tried, deadline passed")
                continue
            try:
                rows = candidate.read(left, self.max_bytes)
            except (OSError, StatsParseError) as exc:
                failed.append(str(exc))
                permanent = permanent or getattr(exc, "permanent", False)
                continue
            self._answered = candidate.description
            self._report(candidate, "; ".join(failed))
            return rows
        reason = "; ".join(failed)
        self._report(None, reason, permanent=permanent)
        raise StatsUnavailable(reason)

    def server_states(self, *, timeout: float = SCRAPE_TIMEOUT) -> list[ServerState]:
        """The servers' rows of :meth:`read` (no frontend/backend aggregates), as the loop and /metrics use them."""
        return [row.state() for row in self.read(timeout=timeout) if row.is_server]

    def _report(self, used: _Candidate | None, detail: str, *, permanent: bool = False) -> None:
        """Log the source in use, or why there is none, once per change (the password is never in it)."""
        key = f"{used.origin}: {used.description}" if used is not None else f"none: {detail}"
        with self._lock:
            if key == self._reported:
                return
            self._reported = key
            worked_before, self._worked = self._worked, self._worked or used is not None
        if used is not None:
            fields = {"source": used.description, "from": used.origin}
            if detail:
                fields["skipped"] = detail
            self._log.info("reading HAProxy statistics", **fields)
        elif worked_before or permanent:
            self._log.error("no HAProxy statistics source answers", reason=detail)
        else:
            # HAProxy usually starts after us: not an error until a source has worked once.
            self._log.info("waiting for HAProxy statistics", reason=detail)
