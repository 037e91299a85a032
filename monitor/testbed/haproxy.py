"""A sandboxed real HAProxy behind the reload handler, plus fake TLS API servers, for tests, demo and bench."""

from __future__ import annotations

import contextlib
import http.server
import itertools
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from haproxy_reload_handler.processes import child_pids
from monitor.adapters.config_writer import ConfigWriter
from monitor.adapters.stats import ServerStat, StatsParseError, read_stats
from monitor.model import Backend, LBConfig
from monitor.render import Renderer
from monitor.testbed import pki

# Longest unix socket path we create (sun_path is 108 bytes including the NUL).
MAX_SOCKET_PATH = 100


def _settled_cmdline(pid: int, *, timeout: float = 5.0) -> bytes | None:
    """``pid``'s command line, None once it is gone; waits out a HAProxy master that re-executes itself.

    A HAProxy 2.6 master re-executes itself (into wait mode) right after forking its worker, and once more when a
    newer one retires it: inside that execve the kernel shows an empty command line (measured: 54 ms on a loaded
    box) while the name stays ``haproxy``, so a one-shot read would miss a master that is running all along.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if cmdline:
                return cmdline
            name, state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)
            # Kernel threads (another name) and exited processes (state Z or X) have an empty command line too.
            if not name.endswith("(haproxy") or state.split()[0] in ("Z", "X"):
                return cmdline
        except OSError:
            return None
        if time.monotonic() >= deadline:
            return cmdline
        time.sleep(0.001)


class LabError(RuntimeError):
    """The lab could not be set up or a condition was not reached in time."""


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


# Ports are handed out in sequence from a random start, so one process never hands out the same port twice
# before it is bound (a counter, not state that changes behaviour).
_NEXT_PORT = itertools.count(random.randrange(10000, 20000))


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago, below the kernel's ephemeral range.

    Below it, no client connection (HAProxy's health checks, the tests' own requests) can hold the port as its
    source port, which a kernel-chosen port from bind(0) does not guarantee.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    ceiling = min(_ephemeral_low(), 30000)  # and clear of Kubernetes' NodePort range
    for _ in range(ceiling):
        port = next(_NEXT_PORT)
        if port >= ceiling:
            break
        with socket.socket(family, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(family, socket.SOCK_STREAM) as s:  # exhausted: fall back to the kernel's choice
        s.bind((host, 0))
        fallback: int = s.getsockname()[1]
        return fallback


class _ReadyzHandler(http.server.BaseHTTPRequestHandler):
    server: _TLSServer
    timeout = None  # HAProxy's TCP mode may hold a connection open for the whole test

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] != "/readyz":
            self._reply(404, b"not found\n")
        elif self.server.owner.ready:
            self._reply(200, b"ok")
        else:
            self._reply(500, b"[-]fake not ready\nreadyz check failed")

    def _reply(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _TLSServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, owner: FakeApiServer, address: tuple[str, int], context: ssl.SSLContext) -> None:
        self.owner = owner
        self.context = context
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _ReadyzHandler)

    def get_request(self) -> tuple[socket.socket, Any]:
        raw, addr = self.socket.accept()
        # The handshake runs in the request thread, so a silent client cannot block accept().
        conn = self.context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
        self.owner._track(conn)
        return conn, addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients (HAProxy checks, killed workers) hang up mid-request all the time


class FakeApiServer:
    """A TLS server on ``address:port`` answering ``GET /readyz`` with 200 (``ready``) or 500."""

    def __init__(
        self, *, cert_dir: Path, address: str = "127.0.0.1", port: int = 0, ready: bool = True
    ) -> None:
        pair = pki.shared_server_cert(cert_dir)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pair.cert, pair.key)
        self.ready = ready
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._server = _TLSServer(self, (address, port), context)
        self.address = address
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-api", daemon=True)
        self._thread.start()

    def _track(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns = {c for c in self._conns if c.fileno() != -1}
            self._conns.add(conn)

    def backend(self, host: str) -> Backend:
        return Backend(host=host, address=self.address, port=self.port)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            self._conns.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


class HaproxyLab:
    """A real HAProxy run by the reload handler in a sandbox: own paths, free ports, same template text."""

    def __init__(
        self,
        *,
        workdir: Path,
        template: Path,
        lb_port: int | None = None,
        stat_port: int | None = None,
        force_stop_after: float = 120.0,
        kill_grace: float = 2.0,
        haproxy: str | None = None,
    ) -> None:
        self.workdir = workdir
        self.force_stop_after = force_stop_after
        self.kill_grace = kill_grace
        self.haproxy = haproxy or shutil.which("haproxy", path="/usr/sbin:" + os.environ.get("PATH", ""))
        if self.haproxy is None:
            raise LabError("haproxy is not installed (apt-get install haproxy)")
        etc = workdir / "etc"
        etc.mkdir(parents=True, exist_ok=True)
        self._short_dir: Path | None = None
        run, lib = workdir / "run", workdir / "lib"
        if len(str(run / "haproxy-master.sock")) > MAX_SOCKET_PATH:
            # pytest's tmp paths are too long for sun_path: keep sockets in a short dir, link it for humans.
            self._short_dir = Path(tempfile.mkdtemp(prefix="hlab-"))
            for name in ("run", "lib"):
                (self._short_dir / name).mkdir()
                link = workdir / name
                if not link.exists():
                    link.symlink_to(self._short_dir / name)
            run, lib = self._short_dir / "run", self._short_dir / "lib"
        else:
            run.mkdir(exist_ok=True)
            lib.mkdir(exist_ok=True)
        self.run_dir, self.lib_dir = run, lib
        self.cfg_path = etc / "haproxy.cfg"
        self.master_socket = run / "haproxy-master.sock"
        self.log_socket = run / "haproxy-log.sock"
        self.admin_socket = lib / "haproxy.sock"
        self.pid_file = lib / "haproxy.pid"
        self.handler_log_path = workdir / "handler.log"
        self.haproxy_log_path = workdir / "haproxy.log"
        self.ready_port = free_port()
        self.monitor_port = free_port()
        self.lb_port = lb_port or free_port()
        self.stat_port = stat_port or free_port()
        self.template_path = etc / ("sandbox-" + template.name)
        self.template_path.write_text(self.sandbox_text(template.read_text()))
        # Unvalidated on purpose: tests hand the reload handler empty and broken configs.
        self._writer = ConfigWriter(cfg=self.cfg_path, haproxy_bin=None)
        self._handler: subprocess.Popen[bytes] | None = None

    def sandbox_text(self, text: str) -> str:
        """The template with the reference's absolute paths and fixed ports replaced by this lab's."""
        text = text.replace("/var/lib/haproxy/run/", f"{self.lib_dir}/")
        text = text.replace("/var/run/haproxy/", f"{self.run_dir}/")
        text = re.sub(r"(?<![0-9])9444(?![0-9])", str(self.ready_port), text)
        return re.sub(r"(?<![0-9])9454(?![0-9])", str(self.monitor_port), text)

    def lbconfig(self, backends: Sequence[Backend], *, api_port: int = 6443) -> LBConfig:
        return LBConfig(
            api_port=api_port, lb_port=self.lb_port, stat_port=self.stat_port, backends=tuple(backends)
        )

    def render(self, backends: Sequence[Backend]) -> str:
        """The sandbox template rendered by the product's renderer (read afresh: tests may edit the file)."""
        return Renderer(self.template_path).render(self.lbconfig(backends))

    def write_config(self, text: str) -> None:
        """Replace the live config with the product's atomic writer (no ``haproxy -c``: see ``__init__``)."""
        self._writer.write(text)

    # ---- the handler process ---------------------------------------------------------------------------
    @property
    def handler_pid(self) -> int | None:
        return self._handler.pid if self._handler is not None else None

    def handler_args(self) -> list[str]:
        return [
            sys.executable, "-m", "haproxy_reload_handler",
            "--config", str(self.cfg_path),
            "--master-socket", str(self.master_socket),
            "--admin-socket", str(self.admin_socket),
            "--pid-file", str(self.pid_file),
            "--log-socket", str(self.log_socket),
            "--haproxy", str(self.haproxy),
            "--force-stop-after", str(self.force_stop_after),
            "--kill-grace", str(self.kill_grace),
        ]  # fmt: skip

    def start_handler(self) -> None:
        """Start the reload handler and wait until it serves the master socket."""
        if self._handler is not None and self._handler.poll() is None:
            raise LabError("the reload handler is already running")
        with open(self.handler_log_path, "ab") as err, open(self.haproxy_log_path, "ab") as out:
            self._handler = subprocess.Popen(
                self.handler_args(), stdout=out, stderr=err, stdin=subprocess.DEVNULL
            )

        def serving() -> bool:
            if self._handler is not None and self._handler.poll() is not None:
                raise LabError(f"reload handler exited with {self._handler.returncode}: {self.handler_log()}")
            # A stale socket file left by a previous run refuses connections; a served one accepts.
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(str(self.master_socket))
            return True

        self.wait_until(serving, timeout=10)

    def reload(self) -> None:
        """Send one ``reload`` line, like the monitor does."""
        self.send_lines(["reload"])

    def send_lines(self, lines: Sequence[str]) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(self.master_socket))
            s.sendall("".join(line + "\n" for line in lines).encode())

    def signal_handler(self, sig: signal.Signals) -> None:
        if self._handler is not None:
            self._handler.send_signal(sig)

    def wait_handler_exit(self, *, timeout: float) -> int:
        if self._handler is None:
            raise LabError("the reload handler was never started")
        return self._handler.wait(timeout=timeout)

    def stop(self) -> None:
        """Stop the handler (SIGTERM, then SIGKILL) and any HAProxy left over from this lab."""
        if self._handler is not None and self._handler.poll() is None:
            self._handler.terminate()
            try:
                self._handler.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._handler.kill()
                self._handler.wait()
        for pid in self.haproxy_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self._short_dir is not None:
            # Kept as a reference: a later start_handler() recreates it, and the next stop() removes it again.
            shutil.rmtree(self._short_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ---- observation -------------------------------------------------------------------------------------
    def handler_log(self) -> str:
        try:
            return self.handler_log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def haproxy_pids(self) -> list[int]:
        """Every process (masters and workers) running this lab's config, found by its unique path."""
        needle = str(self.cfg_path).encode()
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            cmdline = _settled_cmdline(int(entry))
            if (
                cmdline is not None
                and needle in cmdline.split(b"\0")
                and b"haproxy" in cmdline.split(b"\0", 1)[0]
            ):
                found.append(int(entry))
        return sorted(found)

    def masters(self) -> list[int]:
        """HAProxy master processes, i.e. the handler's direct children that run this lab's config."""
        if self.handler_pid is None:
            return []
        children = set(child_pids(self.handler_pid))
        return [pid for pid in self.haproxy_pids() if pid in children]

    def stats(self) -> list[ServerStat]:
        return read_stats(self.admin_socket)

    def servers(self, backend: str = "masters") -> dict[str, ServerStat]:
        return {s.server: s for s in self.stats() if s.proxy == backend and s.is_server}

    def wait_until(self, predicate: Callable[[], bool], *, timeout: float) -> float:
        """Poll ``predicate`` until true; returns seconds waited. Socket/parse errors count as "not yet"."""
        start = time.monotonic()
        deadline = start + timeout
        while True:
            try:
                if predicate():
                    return time.monotonic() - start
            except (OSError, StatsParseError):
                pass
            if time.monotonic() >= deadline:
                tail = "\n".join(self.handler_log().splitlines()[-8:])
                raise LabError(f"condition not reached within {timeout}s; handler log tail:\n{tail}")
            time.sleep(0.005)
