"""A control-plane host for benchmarks: simulated API, real HAProxy, the real monitor, /proc views.

Run it in a network namespace of its own (``unshare -n``): the monitor steers with real nftables rules.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from monitor.settings import parse_duration
from monitor.testbed import pki
from monitor.testbed.apiserver import KubeSim
from monitor.testbed.haproxy import FakeApiServer, HaproxyLab, free_port

REPO = Path(__file__).resolve().parents[2]
MASTER = {"node-role.kubernetes.io/master": ""}
VIP = "127.0.0.10"
BACKENDS = ("127.0.0.11", "127.0.0.12", "127.0.0.13")
Layout = Literal["pod", "socket"]


class HostError(RuntimeError):
    """The host could not be set up, or a condition was not reached in time; the message is one line."""


def wait_for(predicate: Callable[[], object], *, timeout: float, what: str, poll: float = 0.01) -> float:
    """Poll until ``predicate()`` is truthy (errors count as "not yet"); returns the seconds it took."""
    start = time.monotonic()
    while True:
        try:
            if predicate():
                return time.monotonic() - start
        except (OSError, ValueError):
            pass
        if time.monotonic() - start > timeout:
            raise HostError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


# ---- /proc views of a process tree ---------------------------------------------------------------------------
def _stat_fields(pid: int) -> list[str]:
    # Fields from the third of proc(5) on: the command name in parentheses may hold spaces.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int(_stat_fields(int(entry))[1]) == pid:
                    found.append(int(entry))
    return found


def process_tree(pid: int) -> list[int]:
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        pending.extend(_children(current))
    return found


@dataclass(frozen=True)
class CpuSample:
    """CPU seconds of a process tree, and the (process, thread) ids the precise figure was summed over."""

    seconds: float  # live threads' scheduler runtime (ns) + reaped children's cutime+cstime
    ticks_seconds: float  # utime+stime+cutime+cstime only, in 10 ms clock ticks
    tasks: frozenset[tuple[int, int]]


def cpu_sample(pid: int) -> CpuSample:
    """The tree's CPU: a thread that ends between two samples is missing from ``seconds`` (not from ticks)."""
    tick = os.sysconf("SC_CLK_TCK")
    seconds, ticks, tasks = 0.0, 0, set()
    for proc in process_tree(pid):
        try:
            fields = _stat_fields(proc)
            ticks += sum(int(v) for v in fields[11:15])  # fields 14-17 of proc(5)
            seconds += (int(fields[13]) + int(fields[14])) / tick  # children already reaped
            for tid in os.listdir(f"/proc/{proc}/task"):
                seconds += int(Path(f"/proc/{proc}/task/{tid}/schedstat").read_text().split()[0]) / 1e9
                tasks.add((proc, int(tid)))
        except OSError:
            continue
    return CpuSample(seconds=seconds, ticks_seconds=ticks / tick, tasks=frozenset(tasks))


def cpu_between(before: CpuSample, after: CpuSample) -> float:
    """CPU seconds spent between two samples: precise when the same threads lived throughout, else ticks."""
    if before.tasks == after.tasks:
        return after.seconds - before.seconds
    return after.ticks_seconds - before.ticks_seconds


def thread_counters(pid: int) -> dict[int, tuple[int, float, str]]:
    """Per thread id: context switches (voluntary + involuntary: each is a wake-up), CPU seconds, and wchan
    (the kernel function it sleeps in: futex_do_wait for a lock, queue or event, a poll, a socket read)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        base = Path(f"/proc/{pid}/task/{tid}")
        try:
            text = (base / "status").read_text()
            runtime = int((base / "schedstat").read_text().split()[0]) / 1e9
            wchan = (base / "wchan").read_text().strip()
        except OSError:
            continue
        switches = sum(
            int(line.split()[1]) for line in text.splitlines() if line.split(":")[0].endswith("ctxt_switches")
        )
        out[int(tid)] = (switches, runtime, wchan)
    return out


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


@dataclass(frozen=True)
class Footprint:
    """What a long-running process holds: memory (MB), open file descriptors and threads."""

    rss_mb: float
    rss_anon_mb: float
    peak_rss_mb: float
    fds: int
    threads: int

    def row(self) -> str:
        return (
            f"RSS {self.rss_mb:.1f} MB (anonymous {self.rss_anon_mb:.1f}), peak {self.peak_rss_mb:.1f} MB, "
            f"{self.fds} fds, {self.threads} threads"
        )


def footprint(pid: int) -> Footprint:
    return Footprint(
        rss_mb=status_kb(pid, "VmRSS") / 1024,
        rss_anon_mb=status_kb(pid, "RssAnon") / 1024,
        peak_rss_mb=status_kb(pid, "VmHWM") / 1024,
        fds=len(os.listdir(f"/proc/{pid}/fd")),
        threads=status_kb(pid, "Threads"),
    )


def settled_footprint(pid: int, *, samples: int = 20, interval: float = 0.05) -> Footprint:
    """The footprint with what is only in flight left out: the fewest fds and threads seen over a short time
    (a health check's socket lives a millisecond; a scrape's connection thread until the client closes)."""
    seen = []
    for _ in range(samples):
        seen.append(footprint(pid))
        time.sleep(interval)
    last = seen[-1]
    return Footprint(
        rss_mb=last.rss_mb,
        rss_anon_mb=last.rss_anon_mb,
        peak_rss_mb=last.peak_rss_mb,
        fds=min(f.fds for f in seen),
        threads=min(f.threads for f in seen),
    )


# ---- the host --------------------------------------------------------------------------------------------------
def steering_rules() -> int:
    """Rules in this namespace's ``ip ocp_nat`` table (0 when it does not exist)."""
    done = subprocess.run(
        ["nft", "-j", "list", "table", "ip", "ocp_nat"], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        return 0
    items = json.loads(done.stdout).get("nftables", [])
    return sum(1 for i in items if isinstance(i, dict) and "rule" in i)


@dataclass
class MonitorHost:
    """One control-plane host: three master Nodes on fake API servers (plus *spares*, addresses a Node may move
    to), HAProxy behind the reload handler, the kubelet's certificate layout, and the monitor with steering on.

    ``layout="pod"`` shows the monitor what the static pod does: the Go template, and no admin socket (hidden
    under a tmpfs in its own mount namespace), so its statistics come from the stats page. ``"socket"``: the
    Jinja2 template and the admin socket. The template and kubeconfig share ``etc/``, the certificate is in
    ``kubelet-pki/``: directories other processes may use too.
    """

    layout: Layout = "pod"
    check_interval: str = "6s"
    template: str = ""
    spares: int = 0
    extra_args: Sequence[str] = ()
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="monitor-host-")))
    sim: KubeSim | None = None
    lab: HaproxyLab | None = None
    kubelet: pki.KubeletPKI | None = None
    proc: subprocess.Popen[bytes] | None = None
    apis: list[FakeApiServer] = field(default_factory=list)
    spare_addresses: list[str] = field(default_factory=list)
    listen_port: int = 0
    api_port: int = 0

    @property
    def etc(self) -> Path:
        return self.workdir / "etc"

    @property
    def pki_dir(self) -> Path:
        return self.workdir / "kubelet-pki"

    @property
    def log_path(self) -> Path:
        return self.workdir / "monitor.log"

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise HostError("the monitor is not running")
        return self.proc.pid

    @property
    def template_name(self) -> str:
        return self.template or ("haproxy.cfg.tmpl" if self.layout == "pod" else "haproxy.cfg.j2")

    def start(self) -> MonitorHost:
        """Set everything up and start the monitor; returns once it serves every backend and steers."""
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        self.sim = KubeSim(directory=self.workdir / "api").start()
        self.api_port = free_port()
        self.spare_addresses = [f"127.0.1.{i}" for i in range(1, self.spares + 1)]
        self.apis = [
            FakeApiServer(cert_dir=self.workdir / "apis", address=a, port=self.api_port)
            for a in (*BACKENDS, *self.spare_addresses)
        ]
        for i, address in enumerate(BACKENDS):
            self.sim.add_node(f"master-{i}", labels=MASTER, addresses=[("InternalIP", address)])
        self.etc.mkdir(parents=True, exist_ok=True)
        self.kubelet = pki.make_kubelet_pki(self.pki_dir, ca=self.sim.ca, user="system:node:host")
        kubeconfig = pki.write_kubeconfig(
            self.etc / "kubeconfig",
            server=self.sim.url,
            ca_cert=self.sim.ca.cert,
            client_cert_file=self.kubelet.current,
            client_key_file=self.kubelet.current,
        )
        self.lab = HaproxyLab(
            workdir=self.workdir / "haproxy", template=REPO / "templates" / self.template_name
        )
        self.lab.start_handler()
        template = self.etc / self.template_name
        shutil.copyfile(self.lab.template_path, template)
        self.listen_port = free_port()
        # The static pod shares /var/run/haproxy and /etc/haproxy with HAProxy, not the admin socket's directory.
        hide = [
            "unshare", "--mount", "--", "sh", "-c", 'mount -t tmpfs hidden "$0" && exec "$@"', str(self.lab.lib_dir),
        ]  # fmt: skip
        argv = [
            *(hide if self.layout == "pod" else []),  # exec: the monitor keeps the PID
            sys.executable, "-m", "monitor", str(kubeconfig), str(template), str(self.lab.cfg_path),
            "--api-vips", VIP, "--api-port", str(self.api_port), "--lb-port", str(self.lab.lb_port),
            "--stat-port", str(self.lab.stat_port), "--reload-socket", str(self.lab.master_socket),
            "--check-interval", self.check_interval, "--fallback-server", self.sim.url,
            "--health-url", f"http://127.0.0.1:{self.lab.monitor_port}/haproxy_monitor",
            "--listen", f"127.0.0.1:{self.listen_port}",
            *self.extra_args,
        ]  # fmt: skip
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        checks = 3 * parse_duration(self.check_interval)
        self.wait(
            lambda: self.served() == set(BACKENDS), timeout=60, what="HAProxy serving the three backends"
        )
        self.wait(lambda: steering_rules() == 2, timeout=checks * 3 + 30, what="the steering rules")
        return self

    def wait(
        self, predicate: Callable[[], object], *, timeout: float, what: str, poll: float = 0.01
    ) -> float:
        def check() -> object:
            if self.proc is not None and self.proc.poll() is not None:
                raise HostError(f"the monitor exited ({self.proc.returncode}): {self.log_tail()}")
            return predicate()

        return wait_for(check, timeout=timeout, what=what, poll=poll)

    def served(self) -> set[str]:
        """The backend addresses HAProxy serves (read on its admin socket, which the bench can always reach)."""
        assert self.lab is not None
        return {s.address.rsplit(":", 1)[0] for s in self.lab.servers().values()}

    def log_tail(self, lines: int = 8) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def error_lines(self) -> list[str]:
        try:
            return [
                line for line in self.log_path.read_text(errors="replace").splitlines() if " error " in line
            ]
        except OSError:
            return []

    def stop(self, *, remove: bool = True) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.lab is not None:
            self.lab.stop()
        for api in self.apis:
            api.stop()
        if self.sim is not None:
            self.sim.stop()
        if remove:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> MonitorHost:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def in_private_netns() -> bool:
    """Whether this process may install NAT rules: only in a namespace with nothing but ``lo``."""
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def reexec_in_private_netns(argv: Sequence[str], *, cwd: Path = REPO) -> int:
    """Run ``python argv`` under ``unshare -n`` (as root); returns its exit code."""
    return subprocess.run(["unshare", "-n", sys.executable, *argv], cwd=cwd, check=False).returncode
