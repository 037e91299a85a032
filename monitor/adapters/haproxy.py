"""HAProxy's runtime API over its admin (stats) unix socket: ``show stat`` as typed rows."""

from __future__ import annotations

import csv
import enum
import socket
from dataclasses import dataclass
from pathlib import Path

REQUIRED_COLUMNS = ("pxname", "svname", "status", "scur", "stot", "type")


class StatsParseError(ValueError):
    """``show stat`` output that is not HAProxy's CSV (wrong socket, old HAProxy, truncated reply)."""


class StatsSocketError(OSError):
    """The admin socket could not be read (retryable: HAProxy may be starting or reloading)."""


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


def _int(row: dict[str, str], name: str, *, line: int) -> int | None:
    raw = row.get(name, "") or ""
    if raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise StatsParseError(f"show stat line {line}: column {name!r} is {raw!r}, not an integer") from None


def parse_show_stat(text: str) -> list[ServerStat]:
    """Parse the CSV answer of ``show stat`` (first line ``# pxname,svname,...``).

    Raises StatsParseError naming the line and column on anything else.
    """
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise StatsParseError("show stat: empty answer; is this HAProxy's admin socket?")
    header = lines[0]
    if not header.startswith("# "):
        raise StatsParseError(f"show stat: expected a '# pxname,svname,...' header, got {header[:80]!r}")
    columns = [c.strip() for c in header[2:].split(",")]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise StatsParseError(f"show stat: header lacks column(s) {', '.join(missing)}: {header[:80]!r}")
    out = []
    for number, fields in enumerate(csv.reader(lines[1:]), start=2):
        if len(fields) < len(REQUIRED_COLUMNS) or len(fields) > len(columns) + 1:
            raise StatsParseError(
                f"show stat line {number}: {len(fields)} fields for {len(columns)} columns: "
                f"{','.join(fields)[:80]!r}"
            )
        row = dict(zip(columns, fields, strict=False))
        kind_code = _int(row, "type", line=number)
        try:
            kind = StatKind(kind_code)
        except ValueError:
            raise StatsParseError(f"show stat line {number}: unknown type {kind_code!r}") from None
        out.append(
            ServerStat(
                proxy=row["pxname"],
                server=row["svname"],
                kind=kind,
                status=row["status"],
                check_status=row.get("check_status", "").removeprefix("* "),
                current_sessions=_int(row, "scur", line=number) or 0,
                total_sessions=_int(row, "stot", line=number) or 0,
                weight=_int(row, "weight", line=number),
                address=row.get("addr", ""),
                last_change_seconds=_int(row, "lastchg", line=number),
                check_failures=_int(row, "chkfail", line=number),
                check_in_progress=row.get("check_status", "").startswith("* "),
            )
        )
    return out


def read_stats(socket_path: Path, *, timeout: float = 2.0) -> list[ServerStat]:
    """Send ``show stat`` over HAProxy's admin socket and parse the answer.

    Raises StatsSocketError when the socket cannot be used, StatsParseError on an unexpected answer.
    """
    chunks = []
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(socket_path))
            sock.sendall(b"show stat\n")
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise StatsSocketError(
            f"cannot read stats from {socket_path}: {reason}; is HAProxy running with "
            "'stats socket ... level admin' at that path?"
        ) from exc
    return parse_show_stat(b"".join(chunks).decode(errors="replace"))
