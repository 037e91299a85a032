"""The control plane in a box: three hosts in network namespaces on one bridge, keepalived VRRP for the API VIP,
and per host a simulated API server, HAProxy behind our reload handler and the monitor with steering on.

Layout (192.0.2.0/24, TEST-NET-1, exists only inside the namespaces created here)::

    hw-br-TAG   bridge br0 with one port per namespace below
    hw-h0-TAG   eth0 192.0.2.1   KubeSim on 0.0.0.0:6443, HAProxy :9445, monitor, keepalived (priority 100)
    hw-h1-TAG   eth0 192.0.2.2   ... (priority 99)
    hw-h2-TAG   eth0 192.0.2.3   ... (priority 98)
    hw-c-TAG    eth0 192.0.2.50  the client (``monitor.testbed.worldclient``) sending to VIP 192.0.2.100:6443

Everything runs from the calling process: a thread enters a namespace with setns(2) (which moves only that
thread) while it binds a server socket or starts a process there, then goes back. Every process started is
stopped by PID in ``stop()``, which also deletes the namespaces; ``start()`` calls it on failure.

Timings are shortened for test speed, and say so: VRRP ``advert_int 1``, the track script ``interval 1 fall 2
rise 2``, HAProxy checks ``inter 1s fall 2``, the monitor's ``--check-interval 1s`` (its on/off thresholds
stay 3/11, so steering goes ~11 s after HAProxy loses its last backend).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from monitor.testbed import pki
from monitor.testbed.apiserver import KubeSim
from monitor.testbed.haproxy import HaproxyLab
from monitor.testbed.host import HostError, process_tree, steering_rules, wait_for

REPO = Path(__file__).resolve().parents[2]
VIP = "192.0.2.100"
HOST_ADDRS = ("192.0.2.1", "192.0.2.2", "192.0.2.3")
CLIENT_ADDR = "192.0.2.50"
API_PORT, LB_PORT, STAT_PORT, MONITOR_LISTEN = 6443, 9445, 29445, 9448
MASTER = {"node-role.kubernetes.io/master": ""}
# What keepalived's track script runs: ``probe`` is ``monitor probe`` on HAProxy's /haproxy_monitor (200 only
# while HAProxy can reach an API server); ``pkill`` is the seeds' ``pkill -0 haproxy``, limited to the host's
# own namespace (every namespace here shares one PID namespace, so a bare pkill would see the other hosts');
# ``rules`` is OpenShift's order: ``monitor probe`` on /haproxy_ready (HAProxy answers) and both steering rules
# present (what its keepalived monitor checks), so the VIP follows the monitor's steering decision.
Check = Literal["probe", "pkill", "rules"]
CHECKS: tuple[Check, ...] = ("probe", "pkill")
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


class WorldError(HostError):
    """The world could not be built, or a condition was not reached in time; the message is one line."""


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise WorldError(f"setns(CLONE_NEWNET) failed: {os.strerror(err)}")


@contextlib.contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Move this thread into network namespace *name* and back: sockets bound and processes (and threads)
    started inside stay in it."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/run/netns/{name}", os.O_RDONLY)
        try:
            _setns(target)
            try:
                yield
            finally:
                _setns(own)
        finally:
            os.close(target)
    finally:
        os.close(own)


def sh(*argv: str, timeout: float = 10.0, check: bool = True) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise WorldError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def _stop_process(proc: subprocess.Popen[bytes] | None, *, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after *grace*; children left behind (keepalived's VRRP child) are killed too."""
    if proc is None:
        return
    tree = process_tree(proc.pid) if proc.poll() is None else []
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    for pid in tree[1:]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@dataclass
class Host:
    """One control-plane host: its namespace, address, and the four parts running in it."""

    index: int
    netns: str
    address: str
    priority: int
    workdir: Path
    sim: KubeSim | None = None
    lab: HaproxyLab | None = None
    monitor: subprocess.Popen[bytes] | None = None
    keepalived: subprocess.Popen[bytes] | None = None
    kubeconfig: Path | None = None
    template: Path | None = None

    @property
    def name(self) -> str:
        return f"h{self.index}"

    def haproxy(self) -> HaproxyLab:
        if self.lab is None:
            raise WorldError(f"{self.name}: HAProxy was never started")
        return self.lab

    def frontend_sessions(self) -> int:
        """Connections HAProxy's ``main`` frontend accepted (since its last reload)."""
        rows = [s for s in self.haproxy().stats() if s.proxy == "main" and s.is_frontend]
        return rows[0].total_sessions if rows else 0

    def server_status(self) -> dict[str, str]:
        """HAProxy's view of each API server: ``{"master-0": "UP", ...}``."""
        return {name: s.status for name, s in self.haproxy().servers().items()}


@dataclass
class World:
    """Three hosts, a client and keepalived; ``start()`` returns once one host holds the VIP and steers."""

    check: Check = "probe"
    haproxy_inter: str = "1s"
    haproxy_fall: int = 2
    check_interval: str = "1s"
    health_off: int = 11
    force_stop_after: float = 120.0
    settle: str = "1.5s"
    script_interval: int = 1
    script_fall: int = 2
    script_rise: int = 2
    advert_int: int = 1
    tag: str = field(default_factory=lambda: f"{os.getpid() % 100000}{uuid.uuid4().hex[:4]}")
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="hworld-")))
    hosts: list[Host] = field(default_factory=list)
    client: subprocess.Popen[bytes] | None = None
    client_out: Path | None = None
    _namespaces: list[str] = field(default_factory=list)
    _blocked: set[int] = field(default_factory=set)

    @property
    def bridge_ns(self) -> str:
        return f"hw-br-{self.tag}"

    @property
    def client_ns(self) -> str:
        return f"hw-c-{self.tag}"

    # ---- lifecycle -----------------------------------------------------------------------------------------
    def start(self) -> World:
        try:
            self._network()
            ca = pki.make_ca(self.workdir / "ca", name="world-ca")
            for host in self.hosts:
                self._start_host(host, ca)
            self.wait(lambda: len(self.holders()) == 1, timeout=60, what="one host holding the VIP")
            self.wait(
                lambda: all(self.steering(h) == 2 for h in self.hosts), timeout=60, what="every host steering"
            )
            self.wait(lambda: self.request_ok(), timeout=30, what="a request to the VIP succeeding")
            # Last, the steady state the tests start from: h0 (the highest priority) alone holding the VIP.
            # While the hosts start, whichever track script passes first takes the VIP, and a script run cut
            # short on a busy machine (the shortened timings: 1 s runs, fall 2) may move it for a moment; h0
            # takes it back once its own checks pass again.
            self.wait(
                lambda: self.holders() == [0] and self.request_ok(),
                timeout=60,
                what="h0 alone holding the VIP and a request served",
            )
        except BaseException:
            self.stop()
            raise
        return self

    def _network(self) -> None:
        sh("ip", "netns", "add", self.bridge_ns)
        self._namespaces.append(self.bridge_ns)
        sh("ip", "-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.bridge_ns, "link", "set", "br0", "up")
        members = [(f"hw-h{i}-{self.tag}", f"{a}/24") for i, a in enumerate(HOST_ADDRS)]
        members.append((self.client_ns, f"{CLIENT_ADDR}/24"))
        for i, (ns, addr) in enumerate(members):
            sh("ip", "netns", "add", ns)
            self._namespaces.append(ns)
            outside, inside = f"hwb{i}{self.tag}"[:15], f"hwe{i}{self.tag}"[:15]
            sh("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
            sh("ip", "link", "set", outside, "netns", self.bridge_ns)
            sh("ip", "link", "set", inside, "netns", ns, "name", "eth0")
            sh("ip", "-n", self.bridge_ns, "link", "set", outside, "master", "br0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "addr", "add", addr, "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
        self.hosts = [
            Host(index=i, netns=ns, address=HOST_ADDRS[i], priority=100 - i, workdir=self.workdir / f"h{i}")
            for i, (ns, _) in enumerate(members[:3])
        ]

    def _start_host(self, host: Host, ca: pki.CertPair) -> None:
        host.workdir.mkdir(parents=True)
        with in_netns(host.netns):
            # Like kube-apiserver, it listens on every address: VIP:6443 without steering reaches it directly.
            host.sim = KubeSim(
                directory=host.workdir / "api",
                host="0.0.0.0",
                port=API_PORT,
                ca=ca,
                extra_names=[host.address, VIP],
            ).start()
            for i, address in enumerate(HOST_ADDRS):
                host.sim.add_node(f"master-{i}", labels=MASTER, addresses=[("InternalIP", address)])
            host.kubeconfig = host.sim.write_kubeconfig(
                host.workdir / "kubeconfig",
                user=f"system:node:{host.name}",
                server=f"https://{host.address}:6443",
            )
            host.lab = HaproxyLab(
                workdir=host.workdir / "haproxy",
                template=REPO / "templates" / "haproxy.cfg.j2",
                lb_port=LB_PORT,
                stat_port=STAT_PORT,
                force_stop_after=self.force_stop_after,
            )
            host.template = host.workdir / "haproxy.cfg.j2"
            host.template.write_text(
                host.lab.template_path.read_text().replace(
                    "inter 5s fall 3", f"inter {self.haproxy_inter} fall {self.haproxy_fall}"
                )
            )
            host.lab.start_handler()
            self._start_monitor(host)
            self._start_keepalived(host)

    def _start_monitor(self, host: Host) -> None:
        lab = host.haproxy()
        argv = [
            sys.executable, "-m", "monitor", str(host.kubeconfig), str(host.template), str(lab.cfg_path),
            "--api-vips", VIP, "--api-port", str(API_PORT), "--lb-port", str(LB_PORT),
            "--stat-port", str(STAT_PORT), "--reload-socket", str(lab.master_socket),
            "--check-interval", self.check_interval, "--health-off", str(self.health_off),
            "--settle", self.settle, "--fallback-server", f"https://{host.address}:6443",
            "--health-url", f"http://127.0.0.1:{lab.monitor_port}/haproxy_monitor",
            "--listen", f"127.0.0.1:{MONITOR_LISTEN}",
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with in_netns(host.netns), open(host.workdir / "monitor.log", "ab") as log:
            host.monitor = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)

    def check_script(self, host: Host) -> Path:
        """The track script's file: keepalived runs it in the host's namespace (as root here)."""
        lab = host.haproxy()
        if self.check == "probe":
            url = f"http://127.0.0.1:{lab.monitor_port}/haproxy_monitor"
            body = f"PYTHONPATH={REPO} exec {sys.executable} -m monitor.probe --url {url} --timeout 0.8\n"
        elif self.check == "rules":
            url = f"http://127.0.0.1:{lab.ready_port}/haproxy_ready"
            rule = "nft list chain ip ocp_nat {} 2>/dev/null | grep -q OCP_API_LB_REDIRECT"
            body = (
                f"PYTHONPATH={REPO} {sys.executable} -m monitor.probe --url {url} --timeout 0.8 >/dev/null"
                f" && {rule.format('ocp_prerouting')} && {rule.format('ocp_output')}\n"
            )
        else:
            body = "exec pkill -0 --ns $$ --nslist net haproxy\n"
        path = host.workdir / "check.sh"
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(0o755)
        return path

    def keepalived_conf(self, host: Host) -> str:
        return f"""global_defs {{
    router_id {host.name}
    enable_script_security
    script_user root
}}
vrrp_script chk_api {{
    script "{self.check_script(host)}"
    interval {self.script_interval}
    timeout {self.script_interval}
    fall {self.script_fall}
    rise {self.script_rise}
    weight 50
}}
vrrp_instance API_VIP {{
    state BACKUP
    interface eth0
    virtual_router_id 51
    priority {host.priority}
    advert_int {self.advert_int}
    virtual_ipaddress {{
        {VIP}/32 dev eth0
    }}
    track_script {{
        chk_api
    }}
}}
"""

    def _start_keepalived(self, host: Host) -> None:
        conf = host.workdir / "keepalived.conf"
        conf.write_text(self.keepalived_conf(host))
        run = host.workdir / "keepalived"
        run.mkdir(exist_ok=True)
        argv = [
            shutil.which("keepalived", path="/usr/sbin:/sbin:" + os.environ.get("PATH", "")) or "keepalived",
            "-n", "-l", "-D", "-P", "-f", str(conf),
            "-p", str(run / "keepalived.pid"), "-r", str(run / "vrrp.pid"), "-c", str(run / "checkers.pid"),
        ]  # fmt: skip
        with in_netns(host.netns), open(host.workdir / "keepalived.log", "ab") as log:
            host.keepalived = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def stop(self) -> None:
        """Stop every process by PID, then delete the namespaces (which removes the links); never raises."""
        with contextlib.suppress(Exception):
            self.stop_client()
        for host in self.hosts:
            with contextlib.suppress(Exception):
                _stop_process(host.keepalived)
            with contextlib.suppress(Exception):
                _stop_process(host.monitor, grace=10)
            if host.lab is not None:
                with contextlib.suppress(Exception):
                    host.lab.stop()
            if host.sim is not None:
                with contextlib.suppress(Exception):
                    host.sim.stop()
        for ns in reversed(self._namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        self._namespaces.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> World:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- observation ---------------------------------------------------------------------------------------
    def wait(
        self, predicate: Callable[[], object], *, timeout: float, what: str, poll: float = 0.05
    ) -> float:
        def check() -> object:
            for host in self.hosts:
                for label, proc in (("keepalived", host.keepalived), ("monitor", host.monitor)):
                    if proc is not None and proc.poll() is not None and proc.returncode not in (-9, -15):
                        raise WorldError(
                            f"{host.name}'s {label} exited ({proc.returncode}): {self.log_tail(host, label)}"
                        )
            return predicate()

        return wait_for(check, timeout=timeout, what=what, poll=poll)

    def log_tail(self, host: Host, label: str, lines: int = 6) -> str:
        try:
            text = (host.workdir / f"{label}.log").read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.splitlines()[-lines:])

    def holders(self) -> list[int]:
        """Indexes of the hosts whose eth0 holds the VIP (one, except during a move)."""
        found = []
        for host in self.hosts:
            out = sh("ip", "-n", host.netns, "-j", "-4", "addr", "show", "dev", "eth0", check=False)
            infos = json.loads(out or "[]")
            if any(a.get("local") == VIP for link in infos for a in link.get("addr_info", [])):
                found.append(host.index)
        return found

    def holder(self) -> Host:
        found = self.holders()
        if len(found) != 1:
            raise WorldError(f"expected one VIP holder, found {found}")
        return self.hosts[found[0]]

    def steering(self, host: Host) -> int:
        with in_netns(host.netns):
            return steering_rules()

    def request_ok(self, *, timeout: float = 2.0) -> bool:
        """One HTTPS request from the client namespace to VIP:6443 (the client process's own code)."""
        argv = [
            "ip",
            "netns",
            "exec",
            self.client_ns,
            sys.executable,
            "-c",
            _ONE_REQUEST,
            *self._client_creds(),
        ]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        done = subprocess.run(
            [*argv, str(timeout)], capture_output=True, text=True, timeout=timeout + 10, check=False, env=env
        )
        return done.stdout.strip() == "ok"

    def _client_creds(self) -> list[str]:
        creds = self.workdir / "client"
        if not (creds / "client.crt").exists():
            assert self.hosts and self.hosts[0].sim is not None
            pair = pki.make_client_cert(self.hosts[0].sim.ca, creds, user="world-client", name="client")
            assert pair.cert == creds / "client.crt", pair
        return [
            VIP,
            str(self.workdir / "ca" / "world-ca.crt"),
            str(creds / "client.crt"),
            str(creds / "client.key"),
        ]

    # ---- the client stream ---------------------------------------------------------------------------------
    def start_client(self, *, rate: float = 20.0, streams: int = 0, duration: float = 300.0) -> Path:
        vip, ca, cert, key = self._client_creds()
        self.client_out = self.workdir / f"client-{time.monotonic():.3f}.log"
        argv = [
            sys.executable, "-m", "monitor.testbed.worldclient", "--vip", vip, "--ca", ca, "--cert", cert, "--key", key,
            "--rate", str(rate), "--streams", str(streams), "--duration", str(duration), "--out", str(self.client_out),
        ]  # fmt: skip
        with in_netns(self.client_ns):
            self.client = subprocess.Popen(
                argv, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdin=subprocess.DEVNULL
            )
        self.wait(lambda: "B " in self.client_out.read_text(), timeout=20, what="the client starting")  # type: ignore[union-attr]
        return self.client_out

    def stop_client(self) -> None:
        proc, self.client = self.client, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def requests(self) -> list[Request]:
        return (
            [r for r in read_client_log(self.client_out) if isinstance(r, Request)] if self.client_out else []
        )

    def stream_ends(self) -> list[StreamEnd]:
        return (
            [r for r in read_client_log(self.client_out) if isinstance(r, StreamEnd)]
            if self.client_out
            else []
        )

    # ---- faults on a host, and their recovery ----------------------------------------------------------------
    def kill_haproxy(self, host: Host) -> None:
        """SIGKILL HAProxy's master and workers (the handler stays, as a container's would not)."""
        for pid in host.haproxy().haproxy_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def restart_haproxy(self, host: Host) -> None:
        """What a restarted haproxy container does: start HAProxy from the config on disk."""
        lab = host.haproxy()
        self.wait(lambda: not lab.haproxy_pids(), timeout=10, what=f"{host.name}'s HAProxy gone")
        lab.reload()

    def block_backends(self, host: Host) -> None:
        """HAProxy on *host* can reach no API server (every connection to :6443 of another address is reset)."""
        rule = f"ip daddr 192.0.2.0/24 ip daddr != {VIP} tcp dport {API_PORT} reject with tcp reset"
        script = (
            f"add table inet hworld_fault\n"
            f"add chain inet hworld_fault out {{ type filter hook output priority 0 ; }}\n"
            f"add rule inet hworld_fault out {rule}\n"
        )
        subprocess.run(
            ["ip", "netns", "exec", host.netns, "nft", "-f", "-"], input=script, text=True, check=True
        )
        self._blocked.add(host.index)

    def unblock_backends(self, host: Host) -> None:
        sh("ip", "netns", "exec", host.netns, "nft", "delete", "table", "inet", "hworld_fault")
        self._blocked.discard(host.index)

    def backends_blocked(self, host: Host) -> bool:
        return host.index in self._blocked

    def api_running(self, host: Host) -> bool:
        try:
            return host.sim is not None and host.sim.port > 0
        except RuntimeError:  # stopped: KubeSim has no port
            return False

    def kill_monitor(self, host: Host) -> None:
        if host.monitor is not None:
            host.monitor.kill()
            host.monitor.wait(5)

    def restart_monitor(self, host: Host) -> None:
        self._start_monitor(host)

    def link_down(self, host: Host) -> None:
        sh("ip", "-n", host.netns, "link", "set", "eth0", "down")

    def link_up(self, host: Host) -> None:
        sh("ip", "-n", host.netns, "link", "set", "eth0", "up")

    def api_down(self, host: Host) -> None:
        """Stop the host's API server (its port refuses connections)."""
        assert host.sim is not None
        host.sim.stop()

    def api_up(self, host: Host) -> None:
        assert host.sim is not None
        with in_netns(host.netns):
            host.sim.start()


@dataclass(frozen=True)
class Request:
    start: float
    latency: float
    ok: bool
    reason: str


@dataclass(frozen=True)
class StreamEnd:
    stream: int
    opened: float
    ended: float
    reason: str


def read_client_log(path: Path) -> list[Request | StreamEnd]:
    out: list[Request | StreamEnd] = []
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text().splitlines():
            parts = line.split()
            if parts[:1] == ["R"] and len(parts) == 5:
                out.append(Request(float(parts[1]), float(parts[2]), parts[3] == "1", parts[4]))
            elif parts[:1] == ["S"] and len(parts) == 5:
                out.append(StreamEnd(int(parts[1]), float(parts[2]), float(parts[3]), parts[4]))
    return out


_ONE_REQUEST = r"""
import ssl, sys
from monitor.testbed.worldclient import _connect, _status
vip, ca, cert, key, timeout = sys.argv[1:6]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.load_verify_locations(cafile=ca)
ctx.load_cert_chain(cert, key)
try:
    with _connect(ctx, vip, 6443, float(timeout)) as conn:
        conn.sendall(f"GET /readyz HTTP/1.1\r\nHost: {vip}\r\nConnection: close\r\n\r\n".encode())
        print("ok" if _status(conn) == 200 else "bad")
except OSError as exc:
    print(f"error: {exc}")
"""
