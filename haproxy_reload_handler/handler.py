"""The main loop: one event queue, and the HAProxy processes it starts, watches, retires and stops."""

from __future__ import annotations

import os
import queue
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from haproxy_reload_handler.log import log
from haproxy_reload_handler.processes import (
    FileIdentity,
    become_subreaper,
    child_pids,
    descendants,
    exit_words,
    has_children,
    send,
    wrote_pid_file,
)
from haproxy_reload_handler.server import Reply, SocketServer

# While a new HAProxy starts, how often to look for its worker (about 40 ms for a small config).
READY_POLL = 0.01
# After SIGKILL at shutdown, how long to wait for the processes to be reaped before exiting anyway.
REAP_AFTER_KILL = 5.0


@dataclass(frozen=True)
class Options:
    """Everything the handler needs to know; built by ``cli.parse_args`` from argv and the environment."""

    config: Path
    master_socket: Path
    admin_socket: Path
    pid_file: Path
    log_socket: Path | None
    haproxy: str
    force_stop_after: float
    kill_grace: float
    ready_timeout: float
    socket_mode: int


@dataclass
class Instance:
    """One HAProxy master process started by this handler."""

    pid: int
    started: float
    status: int | None = None
    stop_deadline: float | None = None
    term_sent: float | None = None
    kill_sent: bool = False

    @property
    def alive(self) -> bool:
        return self.status is None


@dataclass
class PendingReload:
    """A started HAProxy whose outcome (worker forked, or exit) is not known yet."""

    pid: int
    old_pids: tuple[int, ...]
    started: float
    pid_file_before: FileIdentity
    replies: list[Reply] = field(default_factory=list)  # the lines this reload answers

    def resolve(self, text: str) -> None:
        for reply in self.replies:
            reply.resolve(text)


@dataclass
class Events:
    """What the main loop has to act on after draining its queue."""

    lines: list[Reply] = field(default_factory=list)
    stop: str | None = None


class Handler:
    """Owns the HAProxy processes and the single event queue the main loop drains."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        # SimpleQueue.put is reentrant, so signal handlers may call it.
        self.events: queue.SimpleQueue[tuple[str, Reply | str]] = queue.SimpleQueue()
        self.instances: dict[int, Instance] = {}
        self.pending: PendingReload | None = None
        self.reload_wanted = False
        self.waiting: list[Reply] = []  # lines not yet answered by a started reload
        self.stopping = False
        self.server = SocketServer(
            master_socket=opts.master_socket,
            log_socket=opts.log_socket,
            mode=opts.socket_mode,
            on_reload=lambda reply: self.events.put(("line", reply)),
        )

    def prepare(self) -> None:
        """Create HAProxy's directories and serve the sockets; SystemExit names what is wrong."""
        for path in (self.opts.admin_socket, self.opts.pid_file):
            path.parent.mkdir(parents=True, exist_ok=True)
        become_subreaper()
        self.server.start()
        log(f"serving {self.opts.master_socket} (config {self.opts.config}, haproxy {self.opts.haproxy})")

    def on_signal(self, signum: int, _frame: object) -> None:
        if signum == signal.SIGCHLD:
            self.events.put(("child", ""))
        else:
            self.events.put(("stop", signal.Signals(signum).name))

    # ---- main loop (the only place that acts) --------------------------------------------------------------
    def run(self) -> int:
        if self.opts.config.is_file() and self.opts.config.stat().st_size > 0:
            self.reload_wanted = True
        else:
            log(f"{self.opts.config} is missing or empty; waiting for a 'reload' to start haproxy")
        while True:
            ev = self._drain(self._timeout())
            self.reap()
            if ev.stop is not None:
                log(f"received {ev.stop}; stopping")
                break
            if ev.lines:
                self.reload_wanted = True
                self.waiting.extend(ev.lines)
                if self.pending is not None:
                    log(f"reload requested ({len(ev.lines)}x) while one is in progress; queued")
                elif len(ev.lines) > 1:
                    log(f"coalesced {len(ev.lines)} reload requests into one")
            self._check_pending()
            self._forget_dead()
            if self.reload_wanted and self.pending is None:
                self.reload_wanted = False
                self.start_haproxy()
            self._enforce_deadlines()
        self.shutdown()
        return 0

    def _timeout(self) -> float:
        if self.pending is not None or self.reload_wanted:
            return READY_POLL
        now = time.monotonic()
        wake = now + 1.0
        for inst in self.alive():
            if inst.kill_sent:
                continue
            if inst.term_sent is not None:
                wake = min(wake, inst.term_sent + self.opts.kill_grace)
            elif inst.stop_deadline is not None:
                wake = min(wake, inst.stop_deadline)
        return max(0.0, wake - now)

    def _drain(self, timeout: float) -> Events:
        ev = Events()
        try:
            item: tuple[str, Reply | str] | None = (
                self.events.get(timeout=timeout) if timeout > 0 else self.events.get_nowait()
            )
        except queue.Empty:
            item = None
        while item is not None:
            kind, value = item
            if kind == "line" and isinstance(value, Reply):
                ev.lines.append(value)
            elif kind == "stop" and isinstance(value, str):
                ev.stop = value
            try:
                item = self.events.get_nowait()
            except queue.Empty:
                item = None
        return ev

    # ---- processes ----------------------------------------------------------------------------------------
    def alive(self) -> list[Instance]:
        return [i for i in self.instances.values() if i.alive]

    def reap(self) -> None:
        """Collect every exited child, then give one account of each HAProxy that exited."""
        exited: list[Instance] = []
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            code = os.waitstatus_to_exitcode(status)
            inst = self.instances.get(pid)
            if inst is None:
                log(f"reaped orphan pid {pid} ({exit_words(code)})")
                continue
            inst.status = code
            exited.append(inst)
        for inst in exited:
            self._account_exit(inst)
        if exited and not self.stopping and not self.alive():
            log("no haproxy is running now; send 'reload' to start one")

    def _account_exit(self, inst: Instance) -> None:
        """Log how a HAProxy ended, from facts that do not depend on when this loop looked.

        Whether a new HAProxy failed to start is decided by its pid file, not by whether we happened to
        see its worker before it died: a HAProxy killed 40 ms after it forked its worker is a HAProxy that
        died, not a failed reload, even when the loop had not polled it yet.
        """
        assert inst.status is not None
        how = exit_words(inst.status)
        p = self.pending
        if p is None or p.pid != inst.pid:
            log(f"haproxy pid {inst.pid} {how}")
            return
        self.pending = None
        elapsed = (time.monotonic() - p.started) * 1000
        if wrote_pid_file(self.opts.pid_file, inst.pid, before=p.pid_file_before):
            # It started; the old processes are not given a deadline, they may be the only ones serving.
            log(f"haproxy pid {inst.pid} {how}")
            p.resolve(f"reload failed: haproxy pid {inst.pid} {how} right after starting")
            return
        hint = "" if inst.status < 0 else f" (check with: haproxy -c -f {self.opts.config})"
        still = " ".join(str(i.pid) for i in self.alive()) or "none"
        log(
            f"haproxy pid {inst.pid} {how} after {elapsed:.0f} ms before starting a worker: "
            f"reload FAILED{hint}; still serving: {still}"
        )
        p.resolve(f"reload failed: haproxy pid {inst.pid} {how}; still serving: {still}")

    def _forget_dead(self) -> None:
        self.instances = {pid: i for pid, i in self.instances.items() if i.alive}

    def start_haproxy(self) -> None:
        cfg = self.opts.config
        try:
            size = cfg.stat().st_size
        except OSError:
            size = 0
        replies, self.waiting = self.waiting, []
        if size == 0:
            log(f"reload requested but {cfg} is missing or empty; not starting haproxy")
            for reply in replies:
                reply.resolve(f"reload failed: {cfg} is missing or empty")
            return
        old = tuple(i.pid for i in self.alive())
        argv = [self.opts.haproxy, "-W", "-db", "-f", str(cfg), "-p", str(self.opts.pid_file)]
        if old:
            if self.opts.admin_socket.exists():
                argv += ["-x", str(self.opts.admin_socket)]
            argv += ["-sf", *map(str, old)]
        pid_file_before = FileIdentity.of(self.opts.pid_file)
        try:
            pid = os.posix_spawn(
                argv[0], argv, os.environ, setsigdef=(signal.SIGPIPE, signal.SIGXFSZ), setsigmask=()
            )
        except OSError as exc:
            log(f"cannot start {argv[0]}: {exc.strerror}; is haproxy installed?")
            for reply in replies:
                reply.resolve(f"reload failed: cannot start {argv[0]}: {exc.strerror}")
            return
        now = time.monotonic()
        self.instances[pid] = Instance(pid=pid, started=now)
        self.pending = PendingReload(
            pid=pid, old_pids=old, started=now, pid_file_before=pid_file_before, replies=replies
        )
        if old:
            log(f"reload requested; started haproxy pid {pid} (old: {' '.join(map(str, old))})")
        else:
            log(f"started haproxy pid {pid}")

    def _check_pending(self) -> None:
        """A new HAProxy that forked its worker is ready; its exit is accounted for by ``reap``."""
        p = self.pending
        if p is None:
            return
        elapsed = time.monotonic() - p.started
        if child_pids(p.pid):
            log(f"haproxy pid {p.pid} ready in {elapsed * 1000:.0f} ms")
            p.resolve(f"reload ok: haproxy pid {p.pid} ready in {elapsed * 1000:.0f} ms")
        elif elapsed > self.opts.ready_timeout:
            log(f"haproxy pid {p.pid} has no worker after {elapsed:.1f}s; treating the reload as done")
            p.resolve(f"reload unconfirmed: haproxy pid {p.pid} has no worker after {elapsed:.1f}s")
        else:
            return
        self.pending = None
        if self.opts.force_stop_after > 0:
            deadline = time.monotonic() + self.opts.force_stop_after
            for pid in p.old_pids:
                old = self.instances.get(pid)
                if old is not None and old.alive and old.stop_deadline is None:
                    old.stop_deadline = deadline

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        for inst in self.alive():
            if inst.term_sent is None and inst.stop_deadline is not None and now >= inst.stop_deadline:
                log(
                    f"old haproxy pid {inst.pid} still alive {self.opts.force_stop_after:g}s after reload; "
                    "sending SIGTERM"
                )
                inst.term_sent = now
                send(inst.pid, signal.SIGTERM)
            elif (
                inst.term_sent is not None
                and not inst.kill_sent
                and now >= inst.term_sent + self.opts.kill_grace
            ):
                self._kill(inst)

    def _kill(self, inst: Instance) -> None:
        family = descendants(inst.pid)
        log(f"haproxy pid {inst.pid} ignored SIGTERM; sending SIGKILL (with {len(family)} descendants)")
        inst.kill_sent = True
        send(inst.pid, signal.SIGKILL)
        for pid in family:
            send(pid, signal.SIGKILL)

    def shutdown(self) -> None:
        """SIGTERM every HAProxy, SIGKILL after the grace, and wait (on SIGCHLD) until all are reaped."""
        self.stopping = True
        self.server.stop_accepting()
        for reply in self.waiting + (self.pending.replies if self.pending is not None else []):
            reply.resolve("reload failed: the handler is stopping")
        now = time.monotonic()
        for inst in self.alive():
            log(f"stopping haproxy pid {inst.pid}")
            inst.term_sent = now
            send(inst.pid, signal.SIGTERM)
        kill_at = now + self.opts.kill_grace
        give_up_at = kill_at + REAP_AFTER_KILL
        # Workers of a master that died are re-parented to us: wait for them too, not only the masters.
        while has_children() and (now := time.monotonic()) < give_up_at:
            if now >= kill_at:
                for inst in self.alive():
                    if not inst.kill_sent:
                        self._kill(inst)
            self._drain((kill_at if now < kill_at else give_up_at) - now)
            self.reap()
        self.server.close()
        log("stopped")
