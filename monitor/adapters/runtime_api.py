"""Server changes over HAProxy's admin socket: a RuntimePlan played as runtime API commands, then read back."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from monitor.adapters.stats import StatsParseError, parse_show_stat
from monitor.ports import RuntimeOutcome, RuntimeRefused
from monitor.runtimeplan import (
    AddServer,
    RemoveServer,
    RuntimePlan,
    ServerLine,
    SetAddress,
    carried_state,
    servers_of,
)

MAX_ANSWER_BYTES = 4 * 1024 * 1024
DRAIN_POLL = 0.05  # how often a draining server's sessions are counted
# `show servers state` columns (HAProxy 2.6, format version 1) we compare.
_NAME, _ADDR, _PORT = 3, 4, 18
# Words a runtime CLI line cannot carry as they are (HAProxy splits commands on ';' and words on blanks).
_UNSAFE = frozenset(" \t;\\'\"#")


class RuntimeApi:
    """Plays a plan on the admin socket, one short connection per command (HAProxy's non-interactive mode).

    Before the first command the backends' servers must be those of the live file (a HAProxy that restarted from
    an older file, or a half-applied earlier plan, makes the plan wrong); after the last they must be those of
    the new file. Any other answer than the one each command gives on success raises RuntimeRefused.
    """

    def __init__(
        self,
        *,
        drain_timeout: float,
        timeout: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.drain_timeout = drain_timeout
        self.timeout = timeout
        self._clock, self._sleep = clock, sleep

    def apply(
        self, plan: RuntimePlan, *, socket_path: Path, hurry: Callable[[], bool] = lambda: False
    ) -> RuntimeOutcome:
        session = _Session(socket_path, timeout=self.timeout)
        for backend, servers in plan.before.items():
            session.expect_servers(backend, servers, reason="live servers differ from the file")
        drains: list[float] = []
        for step in plan.steps:
            s = step.server
            match step:
                case SetAddress():
                    answer = session.ask(f"set server {s.key} addr {s.address} port {s.port}")
                    if not answer.startswith(("IP changed", "no need to change", "port changed")):
                        raise session.refused("set server refused", f"set server {s.key}", answer)
                case AddServer():
                    self._add(session, s)
                case RemoveServer():
                    drains.append(self._remove(session, s, hurry))
        for backend, servers in plan.after.items():
            session.expect_servers(backend, servers, reason="read-back mismatch")
        return RuntimeOutcome(commands=session.commands, drains=tuple(drains))

    def check_serving(self, *, socket_path: Path, text: str) -> None:
        """Raises RuntimeRefused unless HAProxy's backends hold exactly the servers of the config ``text``."""
        by_backend: dict[str, list[ServerLine]] = {}
        for (backend, _), server in servers_of(text).items():
            by_backend.setdefault(backend, []).append(server)
        session = _Session(socket_path, timeout=self.timeout)
        for backend, servers in by_backend.items():
            session.expect_servers(backend, servers, reason="HAProxy does not run the live file's servers")

    def save_state(self, *, socket_path: Path, new: str, path: Path) -> None:
        """Write the servers' state for the HAProxy a reload starts from ``new`` (``load-server-state-from-file``).

        Written atomically next to ``path``; raises RuntimeRefused when HAProxy cannot be asked, OSError when the
        file cannot be written.
        """
        session = _Session(socket_path, timeout=self.timeout)
        answer = session.ask("show servers state")
        if not answer.startswith("1"):
            raise session.refused("read-back failed", "show servers state", answer)
        data = carried_state(answer, new).encode()
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    @staticmethod
    def _add(session: _Session, s: ServerLine) -> None:
        unsafe = [w for w in s.keywords if not w or _UNSAFE & set(w)]
        if unsafe:
            raise RuntimeRefused(
                "keyword not expressible",
                f"server {s.key}: keyword {unsafe[0]!r} cannot be sent on one CLI line",
            )
        command = f"add server {s.key} {s.endpoint} {' '.join(s.keywords)}".rstrip()
        answer = session.ask(command)
        if answer != "New server registered.":
            raise session.refused("add server refused", f"add server {s.key}", answer)
        # Dynamic servers start in maintenance with their checks off (HAProxy 2.6).
        if "check" in s.keywords:
            session.ok(f"enable health {s.key}", "enable health refused")
        if "disabled" not in s.keywords:  # a server the file declares disabled stays in maintenance
            session.ok(f"enable server {s.key}", "enable server refused")

    def _remove(self, session: _Session, s: ServerLine, hurry: Callable[[], bool]) -> float:
        """Drain, wait for the sessions up to the deadline, then cut what is left and delete; the drain's seconds."""
        session.ok(f"set server {s.key} state drain", "drain refused")
        start = self._clock()
        while session.sessions(s) > 0 and self._clock() - start < self.drain_timeout and not hurry():
            self._sleep(DRAIN_POLL)
        drained = self._clock() - start
        session.ok(f"set server {s.key} state maint", "maint refused")
        session.ok(f"shutdown sessions server {s.key}", "shutdown sessions refused")
        answer = session.ask(f"del server {s.key}")
        if answer != "Server deleted.":
            raise session.refused("del server refused", f"del server {s.key}", answer)
        return drained


def serving_pid(socket_path: Path, *, timeout: float = 0.5) -> int | None:
    """The pid of the HAProxy process answering on the admin socket (``show info``), None when none answers."""
    try:
        answer = _Session(socket_path, timeout=timeout).ask("show info")
    except RuntimeRefused:
        return None
    for line in answer.splitlines():
        name, _, value = line.partition(":")
        if name == "Pid" and value.strip().isdigit():
            return int(value.strip())
    return None


class _Session:
    """One plan's commands on one admin socket: each answer stripped, each failure named."""

    def __init__(self, path: Path, *, timeout: float) -> None:
        self.path, self.timeout = path, timeout
        self.commands = 0

    def ask(self, command: str) -> str:
        self.commands += 1
        deadline = time.monotonic() + self.timeout
        chunks, size = [], 0
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(str(self.path))
                sock.sendall(command.encode() + b"\n")
                while chunk := sock.recv(65536):
                    size += len(chunk)
                    if size > MAX_ANSWER_BYTES:
                        raise RuntimeRefused(
                            "admin socket error", f"admin socket {self.path}: answer too large"
                        )
                    chunks.append(chunk)
                    sock.settimeout(max(0.001, deadline - time.monotonic()))
        except TimeoutError:
            raise RuntimeRefused(
                "admin socket error", f"admin socket {self.path}: no answer to {command!r} in {self.timeout}s"
            ) from None
        except OSError as exc:
            reason = "admin socket unreachable" if self.commands == 1 else "admin socket error"
            raise RuntimeRefused(reason, f"admin socket {self.path}: {exc.strerror or exc}") from None
        return b"".join(chunks).decode(errors="replace").strip()

    def ok(self, command: str, reason: str) -> None:
        """A command that answers nothing on success."""
        answer = self.ask(command)
        if answer:
            raise self.refused(reason, command, answer)

    def refused(self, reason: str, what: str, answer: str) -> RuntimeRefused:
        first = answer.splitlines()[0] if answer else "no answer"
        return RuntimeRefused(reason, f"admin socket {self.path}: {what}: HAProxy answered {first!r}")

    def servers(self, backend: str) -> dict[str, tuple[str, int]]:
        answer = self.ask(f"show servers state {backend}")
        lines = answer.splitlines()
        if not lines or lines[0] != "1":
            raise self.refused("read-back failed", f"show servers state {backend}", answer)
        found = {}
        for line in lines[1:]:
            cols = line.split()
            if not cols or cols[0].startswith("#"):
                continue
            if len(cols) <= _PORT or not cols[_PORT].isdigit():
                raise self.refused("read-back failed", f"show servers state {backend}", line)
            found[cols[_NAME]] = (cols[_ADDR], int(cols[_PORT]))
        return found

    def expect_servers(self, backend: str, servers: Iterable[ServerLine], *, reason: str) -> None:
        want = {s.name: (s.address, s.port) for s in servers}
        have = self.servers(backend)
        if have != want:
            missing = sorted(set(want) - set(have))
            extra = sorted(set(have) - set(want))
            moved = sorted(n for n in set(want) & set(have) if want[n] != have[n])
            detail = ", ".join(
                f"{what} {','.join(names)}"
                for what, names in (
                    ("missing", missing),
                    ("unexpected", extra),
                    ("at another address", moved),
                )
                if names
            )
            raise RuntimeRefused(reason, f"admin socket {self.path}: backend {backend}: {detail}")

    def sessions(self, s: ServerLine) -> int:
        """The server's current sessions (``show stat``'s scur)."""
        answer = self.ask(f"show stat {s.backend} 4 -1")
        try:
            rows = parse_show_stat(answer + "\n")
        except StatsParseError as exc:
            raise RuntimeRefused("read-back failed", f"admin socket {self.path}: show stat: {exc}") from None
        return sum(r.current_sessions for r in rows if r.server == s.name and r.is_server)
