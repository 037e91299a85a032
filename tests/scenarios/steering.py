"""Health → nftables steering end to end: the real monitor process, real HAProxy and real nft in one netns.

Run as root from the repository root, inside a fresh network namespace (the monitor installs NAT rules
in the namespace it runs in, so the script refuses to run anywhere that is not empty)::

    unshare -n .venv/bin/python -m tests.scenarios.steering --json

This process's namespace plays the control-plane host: ``lo``, a veth to a throw-away "client" namespace, the
API VIPs on the veth, the simulated API (KubeSim), a fake kube-apiserver as HAProxy's backend
(192.0.2.11:6443, a second host address), a "direct" API on VIP:6443 (what a client reaches when nothing is
steered), HAProxy behind the reload handler, and the monitor process. Before the monitor first starts, the
test run plants what earlier monitors leave on an upgraded host (our old ``inet ocp_nat`` table, the
reference's iptables-era rules in ``ip``/``ip6 nat``) beside foreign rules. Every behaviour is observed from
outside the monitor (nft and iptables-nft-save listings, OpenShift's keepalived check as
``tests/keepalived_check.py`` performs it, HAProxy's frontend counters, client connections) and printed as one
JSON object; ``tests/test_steering_e2e.py`` asserts on it and ``bench/bench_steering.py`` reports figures.

Exit code: 0 when every step ran, 1 when a step failed (the JSON's ``error`` says which), 2 on usage.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import shutil
import signal
import socket
import socketserver
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

from monitor.settings import parse_duration
from monitor.testbed import pki
from monitor.testbed.apiserver import KubeSim
from monitor.testbed.haproxy import FakeApiServer, HaproxyLab
from tests.keepalived_check import reference_check_passes

REPO = Path(__file__).resolve().parents[2]
VIP4, VIP6 = "192.0.2.10", "2001:db8::10"
HOST_ADDRS = ("192.0.2.1/24", "192.0.2.11/24", f"{VIP4}/24", "2001:db8::1/64", f"{VIP6}/64")
CLIENT_ADDRS = ("192.0.2.2/24", "2001:db8::2/64")
# Fixed ports are safe here: the namespace is private to this process.
API_PORT, LB_PORT = 6443, 9445
# The monitor's /readyz /metrics; one monitor runs at a time, and HAProxy's ports come from the
# ephemeral range, so this cannot collide.
LISTEN_PORT = 9448
BACKEND_ADDR = "192.0.2.11"  # a host address: discovery refuses loopback backends behind a non-loopback VIP
TABLE, COMMENT = "ocp_nat", "OCP_API_LB_REDIRECT"
PREROUTING, OUTPUT = "ocp_prerouting", "ocp_output"
EXPECTED_RULES = frozenset((chain, vip) for chain in (PREROUTING, OUTPUT) for vip in (VIP4, VIP6))
MISSING_NFT = "/nonexistent/nft"
MASTER = {"node-role.kubernetes.io/master": ""}

# Client run with ``ip netns exec``: a TLS GET /readyz per target, printing "STATUS BODY" or "error: ...".
_FETCH = r"""
import json, socket, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
out = []
for target in sys.argv[2:]:
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=float(sys.argv[1])) as raw:
            with ctx.wrap_socket(raw) as tls:
                tls.sendall(b"GET /readyz HTTP/1.0\r\nHost: api\r\n\r\n")
                data = b""
                while chunk := tls.recv(4096):
                    data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status = head.split(b" ", 2)[1].decode() if head else "none"
        out.append(status + " " + body.decode(errors="replace").strip())
    except (OSError, ValueError, IndexError) as exc:
        out.append(f"error: {exc}")
print(json.dumps(out))
"""


class StepFailed(Exception):
    """A condition was not reached in time, or a setup command failed; the message is one line."""


@dataclass(frozen=True)
class Options:
    """What to run and with which monitor timings (Go durations as the monitor's CLI takes them)."""

    mode: str = "test"
    check_interval: str = "200ms"
    health_on: int = 3
    health_off: int = 3
    settle: str = "200ms"
    tag: str = ""
    cycles: int = 1
    sigterm_runs: int = 1
    probe_runs: int = 20
    scrape_runs: int = 50

    @property
    def interval(self) -> float:
        return parse_duration(self.check_interval)

    def deadline(self, checks: int) -> float:
        """Generous upper bound for ``checks`` monitor cycles, so a loaded machine does not flake."""
        return checks * self.interval * 2 + 10.0


# ---- small helpers -------------------------------------------------------------------------------------
def sh(*argv: str, netns: str | None = None, timeout: float = 10.0) -> str:
    full = ["ip", "netns", "exec", netns, *argv] if netns else list(argv)
    done = subprocess.run(full, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise StepFailed(f"{' '.join(full)} failed ({done.returncode}): {done.stderr.strip()[:300]}")
    return done.stdout


def wait_until(predicate: Callable[[], object], *, timeout: float, what: str, poll: float = 0.005) -> float:
    """Poll until ``predicate()`` is truthy; returns the monotonic time that observation completed.

    Errors count as "not yet". Observations take a few ms (an nft listing, an HTTP GET), which is
    the resolution of every figure measured here.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        now = time.monotonic()
        try:
            last = predicate()
            if last:
                return time.monotonic()
        except (OSError, ValueError, StepFailed) as exc:
            last = exc
        if now > deadline:
            raise StepFailed(f"timed out after {timeout:.1f}s waiting for {what} (last: {last!r})"[:600])
        time.sleep(poll)


def nft_rules() -> list[dict[str, Any]] | None:
    """Our steering rules in ``ip``/``ip6`` TABLE (family, chain, vip, handle); None when neither table exists."""
    rules: list[dict[str, Any]] = []
    found = False
    for family in ("ip", "ip6"):
        done = subprocess.run(
            ["nft", "-j", "list", "table", family, TABLE],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        if done.returncode != 0:
            if "No such file or directory" in done.stderr:
                continue
            raise StepFailed(f"nft -j list table {family} {TABLE} failed: {done.stderr.strip()[:200]}")
        found = True
        for item in json.loads(done.stdout).get("nftables", []):
            rule = item.get("rule") if isinstance(item, dict) else None
            if not isinstance(rule, dict) or rule.get("comment") != COMMENT:
                continue
            vip = ""
            for stmt in rule.get("expr", []):
                match = stmt.get("match") if isinstance(stmt, dict) else None
                left = match.get("left", {}) if isinstance(match, dict) else {}
                if isinstance(left, dict) and left.get("payload", {}).get("field") == "daddr":
                    vip = str(match.get("right")) if isinstance(match, dict) else ""
            rules.append(
                {"family": family, "chain": rule.get("chain"), "vip": vip, "handle": rule.get("handle")}
            )
    return rules if found else None


def keepalived_check() -> bool:
    """The check OpenShift's keepalived monitor runs for the first VIP (tests/keepalived_check.py)."""
    try:
        return reference_check_passes(VIP4)
    except (RuntimeError, subprocess.SubprocessError) as exc:
        raise StepFailed(str(exc)) from exc


def rules_complete() -> bool:
    rules = nft_rules() or []
    return len(rules) == len(EXPECTED_RULES) and {(r["chain"], r["vip"]) for r in rules} == EXPECTED_RULES


def rules_absent() -> bool:
    return not nft_rules()


# What earlier monitors leave behind on an upgraded host, and rules of others that must survive the sweep.
_OLD_INET_TABLE = f"""
add table inet {TABLE}
add chain inet {TABLE} {PREROUTING} {{ type nat hook prerouting priority dstnat; }}
add chain inet {TABLE} {OUTPUT} {{ type nat hook output priority -100; }}
add rule inet {TABLE} {PREROUTING} ip daddr {VIP4} tcp dport {API_PORT} dnat ip to {VIP4}:{LB_PORT} comment "{COMMENT}"
add rule inet {TABLE} {OUTPUT} oif "lo" ip6 daddr {VIP6} tcp dport {API_PORT} redirect to :{LB_PORT} comment "{COMMENT}"
"""
IPTABLES = {"ip": ("iptables-nft", VIP4), "ip6": ("ip6tables-nft", VIP6)}


def plant_leftovers() -> None:
    """Our old inet table, and per family the reference's iptables-era rules beside a foreign rule."""
    done = subprocess.run(
        ["nft", "-f", "-"], input=_OLD_INET_TABLE, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise StepFailed(f"planting the old inet table failed: {done.stderr.strip()[:300]}")
    for tool, vip in IPTABLES.values():
        if shutil.which(tool) is None:
            continue  # the e2e test that needs them requires iptables; the rest run without
        ours = ["-d", vip, "-p", "tcp", "--dport", str(API_PORT), "-m", "comment", "--comment", COMMENT]
        redirect = ["-j", "REDIRECT", "--to-ports", str(LB_PORT)]
        sh(tool, "-t", "nat", "-I", "PREROUTING", *ours, *redirect)
        sh(tool, "-t", "nat", "-I", "OUTPUT", *ours, *redirect, "-o", "lo")
        sh(
            tool,
            "-t",
            "nat",
            "-A",
            "PREROUTING",
            "-p",
            "tcp",
            "--dport",
            "2222",
            "-j",
            "REDIRECT",
            "--to-ports",
            "22",
        )
        foreign = ["-d", vip, "-p", "tcp", "--dport", "2223", "-m", "comment", "--comment", "someone else"]
        sh(tool, "-t", "nat", "-A", "OUTPUT", *foreign, "-j", "REDIRECT", "--to-ports", "22")


def leftover_view() -> dict[str, Any]:
    """Whether our old inet table exists, and the rules iptables-nft-save shows per family."""
    tables = {
        (t["table"]["family"], t["table"]["name"])
        for t in json.loads(sh("nft", "-j", "list", "tables"))["nftables"]
        if "table" in t
    }
    view: dict[str, Any] = {"inet_table": ("inet", TABLE) in tables}
    for family, (tool, _vip) in IPTABLES.items():
        if shutil.which(f"{tool}-save"):
            lines = sh(f"{tool}-save", "-t", "nat").splitlines()
            view[f"{family}_nat"] = sorted(line for line in lines if line.startswith("-A "))
    return view


def http_get(url: str, *, timeout: float = 1.0) -> tuple[int, bytes]:
    host_port = url.split("/", 3)[2]
    host, _, port = host_port.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", "/" + url.split("/", 3)[3])
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def steering_errors() -> float:
    """The monitor's own count of failed nft operations, from its /metrics."""
    _, body = http_get(f"http://127.0.0.1:{LISTEN_PORT}/metrics")
    for line in body.decode().splitlines():
        if line.startswith("haproxy_monitor_steering_errors_total "):
            return float(line.split()[1])
    raise StepFailed("no haproxy_monitor_steering_errors_total in /metrics")


# ---- the "direct" kube-apiserver on the VIPs -----------------------------------------------------------
class _DirectHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"direct"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class DirectApi(ThreadingHTTPServer):
    """TLS on VIP:6443 answering ``200 direct``: what a client reaches when no rule steers it to HAProxy."""

    daemon_threads = True

    def __init__(self, address: str, context: ssl.SSLContext) -> None:
        self.address_family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self.context = context
        super().__init__((address, API_PORT), _DirectHandler)
        threading.Thread(target=self.serve_forever, name=f"direct-{address}", daemon=True).start()

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the bind address' FQDN; there is no DNS in this namespace.
        socketserver.TCPServer.server_bind(self)

    def get_request(self) -> tuple[socket.socket, Any]:
        raw, addr = self.socket.accept()
        return self.context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


# ---- the scenario --------------------------------------------------------------------------------------
@dataclass
class Scenario:
    opts: Options
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="hm-steer-")))
    client_ns: str = ""
    sim: KubeSim | None = None
    lab: HaproxyLab | None = None
    servers: list[Any] = field(default_factory=list)
    procs: list[subprocess.Popen[str]] = field(default_factory=list)
    result: dict[str, Any] = field(default_factory=dict)
    kubeconfig: Path = Path()

    # -- setup ---------------------------------------------------------------------------------------------
    def refuse_shared_namespace(self) -> None:
        links = [line.split(":")[1].strip().split("@")[0] for line in sh("ip", "-o", "link").splitlines()]
        if links != ["lo"]:
            raise StepFailed(
                f"refusing to run: this network namespace has interfaces {links}; "
                "start the scenario in a fresh one (unshare -n ...)"
            )

    def setup_network(self) -> None:
        tag = self.opts.tag or f"{os.getpid()}{uuid.uuid4().hex[:6]}"
        self.client_ns = f"hm-sc-{tag}"
        sh("ip", "link", "set", "lo", "up")
        sh("ip", "netns", "add", self.client_ns)
        # Both ends live in private namespaces, so the interface names cannot collide.
        sh("ip", "link", "add", "veth-h", "type", "veth", "peer", "name", "veth-c", "netns", self.client_ns)
        for netns, ifname, addrs in ((None, "veth-h", HOST_ADDRS), (self.client_ns, "veth-c", CLIENT_ADDRS)):
            for addr in addrs:
                nodad = ["nodad"] if ":" in addr else []  # no duplicate detection: usable at once
                sh("ip", "addr", "add", addr, "dev", ifname, *nodad, netns=netns)
        sh("ip", "link", "set", "veth-h", "up")
        sh("ip", "link", "set", "veth-c", "up", netns=self.client_ns)
        sh("ip", "link", "set", "lo", "up", netns=self.client_ns)

    def setup_services(self) -> None:
        self.sim = KubeSim(directory=self.tmp / "api").start()
        self.sim.add_node("master-0", labels=MASTER, addresses=[("InternalIP", BACKEND_ADDR)])
        self.kubeconfig = self.sim.write_kubeconfig(self.tmp / "kubeconfig")
        self.servers.append(FakeApiServer(cert_dir=self.tmp / "certs", address=BACKEND_ADDR, port=API_PORT))
        pair = pki.shared_server_cert(self.tmp / "certs")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pair.cert, pair.key)
        self.servers.extend(DirectApi(vip, context) for vip in (VIP4, VIP6))
        self.lab = HaproxyLab(
            workdir=self.tmp / "haproxy", template=REPO / "templates" / "haproxy.cfg.j2", lb_port=LB_PORT
        )
        self.lab.start_handler()
        # Links and IPv6 neighbours take a moment; the direct API must answer before anything is measured.
        wait_until(
            lambda: self.client_fetch(VIP4, VIP6) == ["200 direct", "200 direct"],
            timeout=15,
            what="the client reaching the direct API on both VIPs",
            poll=0.05,
        )

    # -- observation ---------------------------------------------------------------------------------------
    def fetch(self, *targets: str, netns: str | None, timeout: float = 2.0) -> list[str]:
        argv = [sys.executable, "-c", _FETCH, str(timeout), *targets]
        out = sh(*argv, netns=netns, timeout=timeout * len(targets) + 10)
        got: list[str] = json.loads(out)
        return got

    def client_fetch(self, *vips: str, port: int = API_PORT) -> list[str]:
        return self.fetch(*(target(v, port) for v in vips), netns=self.client_ns)

    def local_fetch(self, *vips: str, port: int = API_PORT) -> list[str]:
        return self.fetch(*(target(v, port) for v in vips), netns=None)

    def health_ok(self) -> bool:
        assert self.lab is not None
        try:
            status, _ = http_get(f"http://127.0.0.1:{self.lab.monitor_port}/haproxy_monitor", timeout=0.5)
        except OSError:
            return False
        return status == 200

    def frontend_sessions(self) -> int:
        assert self.lab is not None
        for row in self.lab.stats():
            if row.proxy == "main" and row.is_frontend:
                return row.total_sessions
        raise StepFailed("HAProxy's 'show stat' has no FRONTEND row for 'main'")

    # -- the monitor process ------------------------------------------------------------------------------
    def start_monitor(self, *extra: str) -> subprocess.Popen[str]:
        assert self.lab is not None and self.sim is not None
        log = open(self.tmp / f"monitor-{len(self.procs)}.log", "w")  # noqa: SIM115 - closed with the process
        o = self.opts
        argv = [
            sys.executable, "-m", "monitor",
            str(self.kubeconfig), str(self.lab.template_path), str(self.lab.cfg_path),
            "--api-vips", f"{VIP4},{VIP6}",
            "--api-port", str(API_PORT),
            "--lb-port", str(LB_PORT),
            "--stat-port", str(self.lab.stat_port),
            "--check-interval", o.check_interval,
            "--health-on", str(o.health_on),
            "--health-off", str(o.health_off),
            "--settle", o.settle,
            "--reload-socket", str(self.lab.master_socket),
            "--stats-socket", str(self.lab.admin_socket),
            "--health-url", f"http://127.0.0.1:{self.lab.monitor_port}/haproxy_monitor",
            "--fallback-server", self.sim.url,
            "--listen", f"127.0.0.1:{LISTEN_PORT}",
            *extra,
        ]  # fmt: skip
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, text=True, cwd=REPO)
        log.close()
        self.procs.append(proc)
        return proc

    def monitor_log(self, proc: subprocess.Popen[str]) -> str:
        index = self.procs.index(proc)
        return (self.tmp / f"monitor-{index}.log").read_text(errors="replace")

    def stop_monitor(self, proc: subprocess.Popen[str]) -> tuple[int, float, float]:
        """SIGTERM; returns (exit code, seconds until our rules were gone, seconds until the process exited)."""
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        removed = wait_until(rules_absent, timeout=10, what="rules removed after SIGTERM") - start
        code = proc.wait(timeout=10)
        return code, removed, time.monotonic() - start

    def install(self, *, what: str) -> dict[str, Any]:
        """Wait for HAProxy to answer 200, then for the full rule set; timings from the first 200."""
        t_healthy = wait_until(self.health_ok, timeout=30, what=f"/haproxy_monitor 200 ({what})")
        at_healthy = len(nft_rules() or [])
        check_at_healthy = keepalived_check()
        deadline = self.opts.deadline(self.opts.health_on)
        t_check = wait_until(keepalived_check, timeout=deadline, what=f"keepalived's check passing ({what})")
        t_rules = wait_until(rules_complete, timeout=deadline, what=f"rules installed ({what})")
        return {
            "healthy_to_rules_s": round(t_rules - t_healthy, 4),
            "healthy_to_check_s": round(t_check - t_healthy, 4),
            "rules_at_first_200": at_healthy,
            "check_at_first_200": check_at_healthy,
        }

    def outage(self) -> dict[str, Any]:
        """Stop HAProxy (handler and all), then wait for the rules to go; timed from the stop."""
        assert self.lab is not None
        start = time.monotonic()
        self.lab.stop()
        stopped = time.monotonic()
        healthy_after_stop = self.health_ok()
        t_removed = wait_until(
            rules_absent, timeout=self.opts.deadline(self.opts.health_off), what="rules removed (unhealthy)"
        )
        return {
            "stop_s": round(stopped - start, 4),
            "health_ok_after_stop": healthy_after_stop,
            "unhealthy_to_removed_s": round(t_removed - start, 4),
            "table_exists_after": nft_rules() is not None,
            "check_after": keepalived_check(),
        }

    # -- steps ---------------------------------------------------------------------------------------------
    def step_install(self) -> subprocess.Popen[str]:
        plant_leftovers()
        leftovers_before = leftover_view()
        before = nft_rules()
        start = time.monotonic()
        proc = self.start_monitor()
        got = self.install(what="monitor start")
        got["start_to_rules_s"] = round(time.monotonic() - start, 4)
        got["rules_before_start"] = len(before or [])
        got["rules"] = sorted((r["chain"], r["vip"]) for r in nft_rules() or [])
        got["families"] = sorted({(r["family"], r["vip"]) for r in nft_rules() or []})
        got["leftovers_before"] = leftovers_before
        got["leftovers_after"] = leftover_view()
        got["log_says_leftovers_removed"] = "removed rules left by earlier monitors" in self.monitor_log(proc)
        self.result["install"] = got
        return proc

    def step_traffic(self) -> None:
        base = self.frontend_sessions()
        client = self.client_fetch(VIP4, VIP6)
        after_client = self.frontend_sessions()
        local = self.local_fetch(VIP4, VIP6)
        after_local = self.frontend_sessions()
        self.result["traffic"] = {
            "client": client,
            "client_sessions_delta": after_client - base,
            "local": local,
            "local_sessions_delta": after_local - after_client,
        }

    def step_external_delete(self) -> None:
        rules = nft_rules() or []
        victims = [r for r in rules if (r["chain"], r["vip"]) in {(PREROUTING, VIP4), (OUTPUT, VIP6)}]
        start = time.monotonic()
        for r in victims:
            sh("nft", "delete", "rule", str(r["family"]), TABLE, str(r["chain"]), "handle", str(r["handle"]))
        deleted_at = time.monotonic()
        right_after = len(nft_rules() or [])
        t_back = wait_until(
            rules_complete, timeout=self.opts.deadline(1), what="externally deleted rules restored"
        )
        self.result["external_delete"] = {
            "deleted": [[r["chain"], r["vip"]] for r in victims],
            "rules_right_after_delete": right_after,
            "delete_s": round(deleted_at - start, 4),
            "restored_s": round(t_back - deleted_at, 4),
            "rules_after": len(nft_rules() or []),
        }

    def step_unhealthy(self) -> None:
        got = self.outage()
        got["client"] = self.client_fetch(VIP4, VIP6)
        got["local"] = self.local_fetch(VIP4, VIP6)
        # Nothing listens on the LB port now: a connection still steered there would be refused.
        got["client_to_lb_port"] = self.client_fetch(VIP4, port=LB_PORT)
        self.result["unhealthy"] = got

    def step_recovery(self, proc: subprocess.Popen[str]) -> None:
        assert self.lab is not None
        self.lab.start_handler()
        got = self.install(what="HAProxy back")
        got["monitor_running"] = proc.poll() is None
        base = self.frontend_sessions()
        got["client"] = self.client_fetch(VIP4)
        got["client_sessions_delta"] = self.frontend_sessions() - base
        self.result["recovery"] = got

    def step_sigterm(self, proc: subprocess.Popen[str]) -> None:
        code, removed, exited = self.stop_monitor(proc)
        log = self.monitor_log(proc)
        self.result["sigterm"] = {
            "exit_code": code,
            "sigterm_to_removed_s": round(removed, 4),
            "sigterm_to_exit_s": round(exited, 4),
            "table_exists_after": nft_rules() is not None,
            "check_after": keepalived_check(),
            "log_says_removed": "steering rules removed on shutdown" in log,
            "client_after": self.client_fetch(VIP4),
        }

    def step_nft_missing(self) -> None:
        proc = self.start_monitor("--nft-bin", MISSING_NFT)
        url = f"http://127.0.0.1:{LISTEN_PORT}/readyz"

        def readyz() -> tuple[int, dict[str, Any]]:
            status, body = http_get(url)
            return status, json.loads(body)

        def reports_nft_and_healthy() -> bool:
            _, doc = readyz()
            return MISSING_NFT in str(doc.get("steering")) and doc.get("healthy") is True

        wait_until(reports_nft_and_healthy, timeout=30, what="/readyz naming the nft problem while healthy")
        # Three more failed attempts while healthy: the monitor must keep cycling, not give up or exit.
        errors_then = steering_errors()
        wait_until(
            lambda: steering_errors() >= errors_then + 3,
            timeout=self.opts.deadline(3),
            what="three more failed nft attempts",
            poll=0.02,
        )
        status, doc = readyz()
        running = proc.poll() is None
        rules = nft_rules()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
        lines = [line for line in self.monitor_log(proc).splitlines() if MISSING_NFT in line]
        self.result["nft_missing"] = {
            "running": running,
            "readyz_status": status,
            "readyz": doc,
            "log_lines": lines,
            "exit_code": code,
            "table_exists": rules is not None,
        }

    # -- bench-only steps ---------------------------------------------------------------------------------
    def bench_cycles(self, proc: subprocess.Popen[str], *, first: dict[str, Any]) -> None:
        assert self.lab is not None
        removed, installed, checked = [], [first["healthy_to_rules_s"]], [first["healthy_to_check_s"]]
        rng = random.Random()
        for _ in range(self.opts.cycles):
            # Each wait ends right after a monitor check (the one that changed the rules); acting at once
            # would lock HAProxy's changes to the same phase of the check cycle every time and report
            # the worst case. A random delay within one interval samples the phase like real outages do.
            time.sleep(rng.uniform(0, self.opts.interval))
            removed.append(self.outage()["unhealthy_to_removed_s"])
            time.sleep(rng.uniform(0, self.opts.interval))
            self.lab.start_handler()
            got = self.install(what="HAProxy back")
            installed.append(got["healthy_to_rules_s"])
            checked.append(got["healthy_to_check_s"])
        self.result.setdefault("bench", {}).update(
            unhealthy_to_removed_s=removed,
            healthy_to_rules_s=installed,
            healthy_to_check_s=checked,
            monitor_running=proc.poll() is None,
        )

    def bench_probe_and_scrape(self) -> None:
        assert self.lab is not None
        probe = [
            sys.executable, "-m", "monitor", "probe",
            "--url", f"http://127.0.0.1:{self.lab.ready_port}/haproxy_ready",
        ]  # fmt: skip
        probe_s, probe_codes = [], []
        for _ in range(self.opts.probe_runs):
            t0 = time.perf_counter()
            done = subprocess.run(probe, capture_output=True, text=True, cwd=REPO, check=False)
            probe_s.append(time.perf_counter() - t0)
            probe_codes.append(done.returncode)
        scrape_s, sizes = [], []
        for _ in range(self.opts.scrape_runs):
            t0 = time.perf_counter()
            status, body = http_get(f"http://127.0.0.1:{LISTEN_PORT}/metrics")
            scrape_s.append(time.perf_counter() - t0)
            sizes.append(len(body) if status == 200 else -1)
        self.result.setdefault("bench", {}).update(
            probe_s=[round(v, 5) for v in probe_s],
            probe_exit_codes=sorted(set(probe_codes)),
            scrape_s=[round(v, 5) for v in scrape_s],
            scrape_bytes=max(sizes, default=0),
        )

    def bench_sigterm(self, *, first: float) -> None:
        runs = [round(first, 4)]
        for _ in range(self.opts.sigterm_runs - 1):
            proc = self.start_monitor()
            self.install(what="monitor start")
            code, removed, _exited = self.stop_monitor(proc)
            if code != 0:
                raise StepFailed(f"monitor exited {code} on SIGTERM")
            runs.append(round(removed, 4))
        self.result.setdefault("bench", {})["sigterm_to_removed_s"] = runs

    # -- orchestration ------------------------------------------------------------------------------------
    def run(self) -> None:
        steps = self.result.setdefault("completed", [])
        self.refuse_shared_namespace()
        self.setup_network()
        self.setup_services()
        steps.append("setup")
        if self.opts.mode == "bench":
            proc = self.start_monitor()
            first = self.install(what="monitor start")
            self.bench_probe_and_scrape()
            steps.append("probe+scrape")
            self.bench_cycles(proc, first=first)
            steps.append("cycles")
            self.bench_sigterm(first=self.stop_monitor(proc)[1])
            steps.append("sigterm")
            return
        proc = self.step_install()
        steps.append("install")
        self.step_traffic()
        steps.append("traffic")
        self.step_external_delete()
        steps.append("external_delete")
        self.step_unhealthy()
        steps.append("unhealthy")
        self.step_recovery(proc)
        steps.append("recovery")
        self.step_sigterm(proc)
        steps.append("sigterm")
        self.step_nft_missing()
        steps.append("nft_missing")

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        if self.lab is not None:
            self.lab.stop()
        if self.sim is not None:
            self.sim.stop()
        for server in self.servers:
            with contextlib.suppress(Exception):
                if isinstance(server, DirectApi):
                    server.shutdown()
                    server.server_close()
                else:
                    server.stop()
        if self.client_ns:
            subprocess.run(["ip", "netns", "del", self.client_ns], capture_output=True, check=False)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def log_tails(self) -> dict[str, str]:
        tails = {}
        for index in range(len(self.procs)):
            path = self.tmp / f"monitor-{index}.log"
            with contextlib.suppress(OSError):
                tails[path.name] = "\n".join(path.read_text(errors="replace").splitlines()[-25:])
        if self.lab is not None:
            tails["handler.log"] = "\n".join(self.lab.handler_log().splitlines()[-10:])
        return tails


def target(vip: str, port: int) -> str:
    return f"[{vip}]:{port}" if ":" in vip else f"{vip}:{port}"


@contextlib.contextmanager
def _terminate_cleanly() -> Iterator[None]:
    """SIGTERM (e.g. from a test timeout) raises, so ``finally`` still removes namespaces and processes."""

    def raise_exit(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, raise_exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m tests.scenarios.steering", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object (default)")
    parser.add_argument("--mode", choices=("test", "bench"), default="test")
    parser.add_argument("--check-interval", default="200ms")
    parser.add_argument("--health-on", type=int, default=3)
    parser.add_argument("--health-off", type=int, default=3)
    parser.add_argument("--settle", default="200ms")
    parser.add_argument("--tag", default="", help="suffix of the client namespace name (hm-sc-TAG)")
    parser.add_argument("--cycles", type=int, default=5, help="bench: HAProxy stop/start cycles")
    parser.add_argument("--sigterm-runs", type=int, default=5, help="bench: monitor start/SIGTERM runs")
    parser.add_argument("--probe-runs", type=int, default=20)
    parser.add_argument("--scrape-runs", type=int, default=50)
    args = parser.parse_args(argv)
    fields = {k: v for k, v in vars(args).items() if k != "json"}
    return Options(**fields)


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    scenario = Scenario(opts)
    scenario.result["options"] = asdict(opts)
    error: str | None = None
    with _terminate_cleanly():
        try:
            scenario.run()
        except (StepFailed, OSError, subprocess.SubprocessError, AssertionError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # anything else must still produce JSON and clean up
            error = f"unexpected {type(exc).__name__}: {exc}"
        finally:
            if error is not None:
                scenario.result["logs"] = scenario.log_tails()
            scenario.close()
    scenario.result["error"] = error
    scenario.result["client_netns"] = scenario.client_ns
    print(json.dumps(scenario.result, sort_keys=True))
    return 0 if error is None else 1


if __name__ == "__main__":
    raise SystemExit(main())
