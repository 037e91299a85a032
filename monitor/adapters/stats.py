"""Reads HAProxy's statistics, nothing else: ``show stat`` on the admin socket or the stats page's CSV, as rows."""

from __future__ import annotations

import base64
import csv
import enum
import functools
import operator
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from monitor.adapters import localhttp
from monitor.adapters.config_writer import MAX_CONFIG_BYTES
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


_Row = TypeVar("_Row", ServerStat, ServerState)

_KIND_TEXT = {str(kind.value): kind for kind in StatKind}


def _kind(text: str, *, line: int) -> StatKind:
    kind = _KIND_TEXT.get(text)
    if kind is None:  # " 2", "02": what int() takes is taken, as HAProxy's own parsers would
        code = _int(text, "type", line=line)
        kind = _KINDS.get(code) if code is not None else None
        if kind is None:
            raise StatsParseError(f"show stat line {line}: unknown type {code!r}")
    return kind


def _rows(text: str) -> Iterator[tuple[int, StatKind, tuple[str, ...]]]:
    """Each row of a ``show stat`` CSV answer: (line number, type, the ``_WANTED`` fields in order).

    Raises StatsParseError naming the line and column on anything that is not HAProxy's CSV (first line
    ``# pxname,svname,...``, every row as wide as the header, a known type in every row).
    """
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise StatsParseError("show stat: empty answer; is this HAProxy's admin socket?")
    header = lines[0]
    if not header.startswith("# "):
        raise StatsParseError(f"show stat: expected a '# pxname,svname,...' header, got {header[:80]!r}")
    width, pick = _header_layout(header)
    padding = [""] * (width + 1)
    for number, fields in enumerate(csv.reader(lines[1:]), start=2):
        if len(fields) < len(REQUIRED_COLUMNS) or len(fields) > width + 1:
            raise StatsParseError(
                f"show stat line {number}: {len(fields)} fields for {width} columns: "
                f"{','.join(fields)[:80]!r}"
            )
        if len(fields) <= width:
            fields += padding[len(fields) :]
        picked = pick(fields)
        yield number, _kind(picked[-1], line=number), picked


def parse_show_stat(text: str) -> list[ServerStat]:
    """Parse the CSV answer of ``show stat`` (first line ``# pxname,svname,...``): every row, every column we use.

    Raises StatsParseError naming the line and column on anything else. Fields are taken by their column's
    index, not through a dict per row.
    """
    out = []
    for number, kind, fields in _rows(text):
        pxname, svname, status, check, scur, stot, weight, addr, lastchg, chkfail, _ = fields
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


def parse_server_states(text: str) -> list[ServerState]:
    """The server rows of a ``show stat`` answer, as the loop and /metrics follow them (no aggregates).

    What every check interval and every scrape parses: the answer is checked as :func:`parse_show_stat` checks
    it (header, width and type of every row, the session count of every server), but only the five columns
    a ServerState holds are read, and only server rows become objects.
    """
    out = []
    for number, kind, fields in _rows(text):
        if kind is StatKind.SERVER:
            check = fields[3]
            sessions = _int(fields[4], "scur", line=number) or 0
            out.append(ServerState(fields[0], fields[1], fields[2], check.removeprefix("* "), sessions))
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
    return parse_show_stat(fetch_stats(socket_path, timeout=timeout, max_bytes=max_bytes))


def fetch_stats(socket_path: Path, *, timeout: float = 2.0, max_bytes: int = MAX_STATS_BYTES) -> str:
    """The text of ``show stat`` over HAProxy's admin socket, unparsed; raises StatsSocketError (see
    :func:`read_stats`)."""
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
    return b"".join(chunks).decode(errors="replace")


@functools.lru_cache(maxsize=8)
def _page_request(page: StatsPage) -> bytes:
    """The request bytes for a page: the same every check interval (pages come from the config: a few)."""
    host = f"[{page.host}]" if ":" in page.host else page.host
    lines = [
        f"GET {page.csv_target} HTTP/1.1",
        f"Host: {host}:{page.port}",
        "Accept: text/csv",
        "User-Agent: haproxy-monitor",
    ]
    if page.user or page.password:
        token = base64.b64encode(f"{page.user}:{page.password}".encode()).decode()
        lines.append(f"Authorization: Basic {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_stats_page(
    page: StatsPage, *, timeout: float = 2.0, max_bytes: int = MAX_STATS_BYTES
) -> list[ServerStat]:
    """GET the stats page's CSV (``URI;csv``, HTTP basic auth when the page has credentials) and parse it.

    Raises StatsPageError (one line naming the URL, never the password) or StatsParseError.
    """
    return parse_show_stat(fetch_stats_page(page, timeout=timeout, max_bytes=max_bytes))


def fetch_stats_page(page: StatsPage, *, timeout: float = 2.0, max_bytes: int = MAX_STATS_BYTES) -> str:
    """The stats page's CSV text, unparsed (see :func:`read_stats_page`).

    The whole exchange ends within ``timeout`` seconds (each wait is given only what is left of it); a body
    over ``max_bytes`` is refused. Raises StatsPageError (one line naming the URL, never the password). It
    runs every check interval and on every scrape: HTTP/1.1 on a kept connection (``localhttp``).
    """
    url = page.url
    try:
        answer = localhttp.get(
            page.host,
            page.port,
            _page_request(page),
            deadline=time.monotonic() + timeout,
            body=True,
            max_body=max_bytes,
        )
    except TimeoutError as exc:
        raise StatsPageError(f"stats page {url}: no complete answer within the deadline") from exc
    except localhttp.AnswerError as exc:
        raise StatsPageError(f"stats page {url}: {exc}") from exc
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise StatsPageError(f"stats page {url}: {reason}") from exc
    status, reason = answer.status, answer.reason
    if status == 401:
        who = f"user {page.user!r}" if page.user else "no credentials"
        raise StatsPageError(
            f"stats page {url}: HTTP 401, {who} refused; check the 'stats auth' user and password",
            permanent=True,
        )
    if status != 200:
        raise StatsPageError(
            f"stats page {url}: HTTP {status} {reason}; is {page.uri} the 'stats uri'?",
            permanent=status in (403, 404),
        )
    return answer.body.decode(errors="replace")


@dataclass(frozen=True)
class _Candidate:
    """One place statistics may be read from, and where we learned of it."""

    description: str  # never holds a password
    origin: str
    fetch: Callable[[float, int], str]  # (timeout, max bytes) -> the CSV text


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
            fetch=lambda timeout, cap: fetch_stats(path, timeout=timeout, max_bytes=cap),
        )

    @staticmethod
    def _page(page: StatsPage, *, origin: str) -> _Candidate:
        user = f" (user {page.user})" if page.user else ""
        return _Candidate(
            description=f"page {page.url}{user}",
            origin=origin,
            fetch=lambda timeout, cap: fetch_stats_page(page, timeout=timeout, max_bytes=cap),
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
        return self._read(parse_show_stat, timeout)

    def server_states(self, *, timeout: float = SCRAPE_TIMEOUT) -> list[ServerState]:
        """The servers' rows (no frontend/backend aggregates), as the loop and /metrics use them: as :meth:`read`,
        parsed into only what a ServerState holds (this runs every check interval)."""
        return self._read(parse_server_states, timeout)

    def _read(self, parse: Callable[[str], list[_Row]], timeout: float) -> list[_Row]:
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
                rows = parse(candidate.fetch(left, self.max_bytes))
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
