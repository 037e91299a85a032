#!/usr/bin/env python3
"""The haproxy container's reload handler: serves the master socket and starts, reloads and retires HAProxy.

Standalone (standard library only) so that it runs in the haproxy container without the monitor package.
It replaces the reference static pod's bash+socat loop:

* every line ``reload`` received on the master socket (unix stream) starts a new
  ``haproxy -W -db -f CFG -p PIDFILE -x ADMIN_SOCK -sf OLD_PIDS`` (listening sockets are passed over the
  admin socket, old processes finish their connections), or a plain start if no HAProxy is running;
* reloads are serialized and coalesced: a burst of lines gives at most one reload in progress plus one after;
* a new HAProxy that exits before it forks a worker (bad config) is reported and the old ones keep serving;
* old processes still alive ``--force-stop-after`` seconds after a successful reload get SIGTERM, then
  SIGKILL after ``--kill-grace`` seconds;
* datagrams on the log socket are copied to stdout (HAProxy's ``log`` target);
* SIGTERM/SIGINT stop every HAProxy it started, remove its sockets and exit 0.

The only processes it signals are the ones it started (and their descendants), never ``pidof haproxy``.
Logs are one line per event on stderr, prefixed ``reload-handler:``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import queue
import shutil
import signal
import socket
import stat
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

PROG = "reload-handler"
MAX_LINE = 4096
MAX_CLIENTS = 64
PR_SET_CHILD_SUBREAPER = 36


@dataclass(frozen=True)
class Options:
    """Command-line options; every option also reads an environment variable (see ``parse_args``)."""

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


@dataclass
class Events:
    """What the main loop has to act on after draining its queue."""

    lines: list[str] = field(default_factory=list)
    stop: str | None = None


def log(message: str) -> None:
    """Write one event line to stderr in a single write so concurrent lines do not interleave."""
    with contextlib.suppress(OSError):
        os.write(2, f"{PROG}: {message}\n".encode(errors="replace"))


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default) or default


def _env_seconds(name: str, default: str) -> float:
    raw = _env(name, default)
    try:
        return float(raw)
    except ValueError:
        raise SystemExit(f"{PROG}: {name}={raw!r} is not a number of seconds") from None


def _default_haproxy() -> str:
    if os.access("/usr/sbin/haproxy", os.X_OK):
        return "/usr/sbin/haproxy"
    return shutil.which("haproxy") or "/usr/sbin/haproxy"


def parse_args(argv: list[str] | None = None) -> Options:
    """Parse options; each has an environment variable so a pod can set them without a command line."""
    p = argparse.ArgumentParser(
        prog="haproxy-reload-handler",
        description="Serve the master socket; start, reload (seamless -x/-sf) and retire HAProxy.",
    )
    p.add_argument("--config", default=_env("RELOAD_HANDLER_CONFIG", "/etc/haproxy/haproxy.cfg"))
    p.add_argument(
        "--master-socket",
        default=_env("RELOAD_HANDLER_MASTER_SOCKET", "/var/run/haproxy/haproxy-master.sock"),
    )
    p.add_argument(
        "--admin-socket", default=_env("RELOAD_HANDLER_ADMIN_SOCKET", "/var/lib/haproxy/run/haproxy.sock")
    )
    p.add_argument("--pid-file", default=_env("RELOAD_HANDLER_PID_FILE", "/var/lib/haproxy/run/haproxy.pid"))
    p.add_argument(
        "--log-socket",
        default=_env("RELOAD_HANDLER_LOG_SOCKET", "/var/run/haproxy/haproxy-log.sock"),
        help="unix datagram socket copied to stdout; empty string disables it",
    )
    p.add_argument("--haproxy", default=_env("RELOAD_HANDLER_HAPROXY", _default_haproxy()))
    p.add_argument(
        "--force-stop-after",
        type=float,
        default=_env_seconds("OLD_HAPROXY_PS_FORCE_DEL_TIMEOUT", "120"),
        help="seconds after a reload before old processes still alive get SIGTERM; 0 disables",
    )
    p.add_argument(
        "--kill-grace",
        type=float,
        default=_env_seconds("RELOAD_HANDLER_KILL_GRACE", "5"),
        help="seconds between SIGTERM and SIGKILL",
    )
    p.add_argument(
        "--ready-timeout",
        type=float,
        default=_env_seconds("RELOAD_HANDLER_READY_TIMEOUT", "10"),
        help="seconds to wait for a new HAProxy to fork its worker before the next reload may start",
    )
    p.add_argument(
        "--socket-mode",
        default=_env("RELOAD_HANDLER_SOCKET_MODE", "0660"),
        help="octal mode of the master and log sockets",
    )
    ns = p.parse_args(argv)
    try:
        mode = int(ns.socket_mode, 8)
    except ValueError:
        p.error(f"--socket-mode: {ns.socket_mode!r} is not an octal mode such as 0660")
    haproxy = ns.haproxy if "/" in ns.haproxy else (shutil.which(ns.haproxy) or ns.haproxy)
    if not os.access(haproxy, os.X_OK):
        p.error(f"--haproxy: {haproxy} is not an executable; install haproxy or pass its path")
    return Options(
        config=Path(ns.config),
        master_socket=Path(ns.master_socket),
        admin_socket=Path(ns.admin_socket),
        pid_file=Path(ns.pid_file),
        log_socket=Path(ns.log_socket) if ns.log_socket else None,
        haproxy=haproxy,
        force_stop_after=ns.force_stop_after,
        kill_grace=ns.kill_grace,
        ready_timeout=ns.ready_timeout,
        socket_mode=mode,
    )


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (HAProxy's workers of a master)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        return [int(x) for x in text.split()]
    except FileNotFoundError:
        return []
    except OSError:
        pass
    # Kernels without CONFIG_PROC_CHILDREN: scan /proc for the parent pid.
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            data = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = data.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[1] == str(pid):
            found.append(int(entry))
    return found


def descendants(pid: int) -> list[int]:
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in child_pids(todo.pop()):
            out.append(child)
            todo.append(child)
    return out


def send(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


class Handler:
    """Owns the sockets, the HAProxy processes and the single event queue the main loop drains."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        # SimpleQueue.put is reentrant, so signal handlers may call it.
        self.events: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
        self.instances: dict[int, Instance] = {}
        self.pending: PendingReload | None = None
        self.reload_wanted = False
        self.listener: socket.socket | None = None
        self.log_sock: socket.socket | None = None
        self.owned_paths: dict[Path, tuple[int, int]] = {}
        self.clients: set[socket.socket] = set()
        self.clients_lock = threading.Lock()
        self.client_slots = threading.BoundedSemaphore(MAX_CLIENTS)
        self.next_client = 0

    # ---- set-up -------------------------------------------------------------------------------------------
    def prepare(self) -> None:
        paths = [self.opts.master_socket, self.opts.admin_socket, self.opts.pid_file]
        if self.opts.log_socket is not None:
            paths.append(self.opts.log_socket)
        # Stale sockets from a previous container run would make bind() fail (the reference's socat broke).
        for path in [self.opts.master_socket, self.opts.log_socket]:
            if path is not None:
                self._remove_stale(path)
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(ctypes.ArgumentError, OSError, AttributeError):
            # Workers orphaned by a SIGKILLed master are re-parented to us, so we can reap them.
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        if self.opts.log_socket is not None:
            self.log_sock = self._bind(self.opts.log_socket, socket.SOCK_DGRAM)
            threading.Thread(target=self._copy_logs, name="log-copy", daemon=True).start()
        self.listener = self._bind(self.opts.master_socket, socket.SOCK_STREAM)
        self.listener.listen(16)
        threading.Thread(target=self._accept_loop, name="accept", daemon=True).start()
        log(f"serving {self.opts.master_socket} (config {self.opts.config}, haproxy {self.opts.haproxy})")

    def _remove_stale(self, path: Path) -> None:
        try:
            st = path.lstat()
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            raise SystemExit(f"{PROG}: {path} is a directory; remove it or choose another socket path")
        path.unlink()
        log(f"removed stale {path}")

    def _bind(self, path: Path, kind: int) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, kind)
        try:
            sock.bind(str(path))
        except OSError as exc:
            sock.close()
            raise SystemExit(f"{PROG}: cannot bind {path}: {exc.strerror}; check the directory") from exc
        os.chmod(path, self.opts.socket_mode)
        st = path.stat()
        self.owned_paths[path] = (st.st_dev, st.st_ino)
        return sock

    # ---- threads: only read and enqueue -------------------------------------------------------------------
    def _copy_logs(self) -> None:
        assert self.log_sock is not None
        while True:
            try:
                data = self.log_sock.recv(65536)
            except OSError:
                return
            if not data.endswith(b"\n"):
                data += b"\n"
            with contextlib.suppress(OSError):
                os.write(1, data)

    def _accept_loop(self) -> None:
        assert self.listener is not None
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            if not self.client_slots.acquire(blocking=False):
                log(f"too many clients ({MAX_CLIENTS}); closing a new connection")
                conn.close()
                continue
            self.next_client += 1
            with self.clients_lock:
                self.clients.add(conn)
            threading.Thread(
                target=self._serve_client, args=(conn, self.next_client), name="client", daemon=True
            ).start()

    def _serve_client(self, conn: socket.socket, client: int) -> None:
        buf = b""
        try:
            while True:
                try:
                    data = conn.recv(4096)
                except OSError:
                    break
                if not data:
                    break
                buf += data
                while b"\n" in buf:
                    raw, buf = buf.split(b"\n", 1)
                    self._line(client, raw)
                if len(buf) > MAX_LINE:
                    log(f"client {client}: line longer than {MAX_LINE} bytes; closing the connection")
                    buf = b""
                    break
            if buf.strip():
                # A line cut by the client closing: honour it only if it is a complete word.
                self._line(client, buf)
        finally:
            with self.clients_lock:
                self.clients.discard(conn)
            conn.close()
            self.client_slots.release()

    def _line(self, client: int, raw: bytes) -> None:
        line = raw.decode(errors="replace").strip()
        if not line:
            return
        if line == "reload":
            self.events.put(("line", line))
        else:
            log(f"client {client}: ignored unknown command {line[:80]!r} (only 'reload' is supported)")

    # ---- main loop (the only place that acts) --------------------------------------------------------------
    def on_signal(self, signum: int, _frame: object) -> None:
        if signum == signal.SIGCHLD:
            self.events.put(("child", ""))
        else:
            self.events.put(("stop", signal.Signals(signum).name))

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
            return 0.01
        now = time.monotonic()
        wake = now + 1.0
        for inst in self.instances.values():
            if not inst.alive or inst.kill_sent:
                continue
            if inst.term_sent is not None:
                wake = min(wake, inst.term_sent + self.opts.kill_grace)
            elif inst.stop_deadline is not None:
                wake = min(wake, inst.stop_deadline)
        return max(0.0, wake - now)

    def _drain(self, timeout: float) -> Events:
        ev = Events()
        try:
            item: tuple[str, str] | None = (
                self.events.get(timeout=timeout) if timeout > 0 else self.events.get_nowait()
            )
        except queue.Empty:
            item = None
        while item is not None:
            kind, value = item
            if kind == "line":
                ev.lines.append(value)
            elif kind == "stop":
                ev.stop = value
            try:
                item = self.events.get_nowait()
            except queue.Empty:
                item = None
        return ev

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = os.waitstatus_to_exitcode(status)
            inst = self.instances.get(pid)
            if inst is None:
                log(f"reaped orphan pid {pid} (status {code})")
                continue
            inst.status = code
            if not (self.pending is not None and self.pending.pid == pid):
                log(f"haproxy pid {pid} exited (status {code})")
                if inst.stop_deadline is None and inst.term_sent is None and not self.alive():
                    log("no haproxy is running now; send 'reload' to start one")

    def _forget_dead(self) -> None:
        pending = self.pending.pid if self.pending is not None else None
        self.instances = {pid: i for pid, i in self.instances.items() if i.alive or pid == pending}

    def alive(self) -> list[Instance]:
        return [i for i in self.instances.values() if i.alive]

    def start_haproxy(self) -> None:
        cfg = self.opts.config
        try:
            size = cfg.stat().st_size
        except OSError:
            size = 0
        if size == 0:
            log(f"reload requested but {cfg} is missing or empty; not starting haproxy")
            return
        old = tuple(i.pid for i in self.alive())
        argv = [self.opts.haproxy, "-W", "-db", "-f", str(cfg), "-p", str(self.opts.pid_file)]
        if old:
            if self.opts.admin_socket.exists():
                argv += ["-x", str(self.opts.admin_socket)]
            argv += ["-sf", *map(str, old)]
        try:
            pid = os.posix_spawn(
                argv[0], argv, os.environ, setsigdef=(signal.SIGPIPE, signal.SIGXFSZ), setsigmask=()
            )
        except OSError as exc:
            log(f"cannot start {argv[0]}: {exc.strerror}; is haproxy installed?")
            return
        now = time.monotonic()
        self.instances[pid] = Instance(pid=pid, started=now)
        self.pending = PendingReload(pid=pid, old_pids=old, started=now)
        if old:
            log(f"reload requested; started haproxy pid {pid} (old: {' '.join(map(str, old))})")
        else:
            log(f"started haproxy pid {pid}")

    def _check_pending(self) -> None:
        p = self.pending
        if p is None:
            return
        inst = self.instances[p.pid]
        elapsed = time.monotonic() - p.started
        if not inst.alive:
            still = " ".join(str(i.pid) for i in self.alive()) or "none"
            log(
                f"haproxy pid {p.pid} exited with status {inst.status} after {elapsed * 1000:.0f} ms "
                f"before starting a worker: reload FAILED (check with: haproxy -c -f {self.opts.config}); "
                f"still serving: {still}"
            )
            self.pending = None
            return
        if child_pids(p.pid):
            log(f"haproxy pid {p.pid} ready in {elapsed * 1000:.0f} ms")
        elif elapsed > self.opts.ready_timeout:
            log(f"haproxy pid {p.pid} has no worker after {elapsed:.1f}s; treating the reload as done")
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
        if self.listener is not None:
            self.listener.close()
        now = time.monotonic()
        for inst in self.alive():
            log(f"stopping haproxy pid {inst.pid}")
            inst.term_sent = now
            send(inst.pid, signal.SIGTERM)
        kill_at = now + self.opts.kill_grace
        give_up_at = kill_at + 5.0
        while self.alive() and time.monotonic() < give_up_at:
            self.reap()
            if time.monotonic() >= kill_at:
                for inst in self.alive():
                    if not inst.kill_sent:
                        self._kill(inst)
            time.sleep(0.01)
        # Workers of SIGKILLed masters may have been re-parented to us.
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0] != 0:
                pass
        with self.clients_lock:
            for conn in self.clients:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        if self.log_sock is not None:
            self.log_sock.close()
        for path, ident in self.owned_paths.items():
            # Only our own socket: a newer handler may already have bound the same path.
            with contextlib.suppress(OSError):
                st = path.stat()
                if (st.st_dev, st.st_ino) == ident:
                    path.unlink()
        log("stopped")


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    handler = Handler(opts)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
        signal.signal(sig, handler.on_signal)
    try:
        handler.prepare()
    except SystemExit as exc:
        log(str(exc).removeprefix(f"{PROG}: "))
        return 1
    return handler.run()


if __name__ == "__main__":
    sys.exit(main())
