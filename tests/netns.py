"""Test helper: throw-away network namespaces joined by a veth pair, with TCP banner servers and clients.

Typical use (``from tests.netns import Topology``)::

    with Topology.create(host_addrs=["192.0.2.1/24", "192.0.2.10/24"], client_addrs=["192.0.2.2/24"]) as topo:
        server = topo.serve_banners(topo.host, {9445: "LB", 6443: "API"})
        assert topo.fetch_banner(topo.client, "192.0.2.10", 6443) == "LB"

Every name carries the pid and a random suffix so parallel test runs never collide, and everything
(processes, namespaces) is torn down on exit even when the test failed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# A banner server: accepts on every given port (dual-stack) and writes its banner to each client.
_SERVER = r"""
import select, socket, sys
banners = dict(arg.split("=", 1) for arg in sys.argv[1:])
socks = {}
for port, banner in banners.items():
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", int(port)))
    s.listen(64)
    socks[s] = banner.encode() + b"\n"
print("ready", flush=True)
while True:
    ready, _, _ = select.select(list(socks), [], [])
    for s in ready:
        conn, _ = s.accept()
        with conn:
            conn.sendall(socks[s])
"""

_CLIENT = r"""
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])) as c:
        print(c.makefile().readline().strip())
except OSError as exc:
    print(f"error: {exc}")
"""


def python_unshared(flags: Sequence[str], script: str, *args: str, timeout: float = 60.0) -> Any:
    """Run ``python -c script args`` under ``unshare flags`` (private namespaces, as root) from the checkout, and
    return the JSON its last line prints; fails the test with the script's stderr when it exits non-zero."""
    done = subprocess.run(
        ["unshare", *flags, sys.executable, "-c", script, *args],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


def available() -> str | None:
    """Why netns tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"needs {tool!r} on PATH"
    return None


def run(netns: str | None, *argv: str, check: bool = True, timeout: float = 10.0) -> str:
    """Run argv (inside netns when given) and return its stdout; raise with stderr on failure."""
    full = ["ip", "netns", "exec", netns, *argv] if netns else list(argv)
    done = subprocess.run(full, capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(full)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


@dataclass
class Topology:
    """Two namespaces, ``host`` (where HAProxy and the VIP live) and ``client``, linked by a veth pair."""

    host: str
    client: str
    host_if: str
    client_if: str
    tag: str = ""
    _procs: list[subprocess.Popen[str]] = field(default_factory=list)
    _extra: list[str] = field(default_factory=list)

    @classmethod
    @contextlib.contextmanager
    def create(cls, *, host_addrs: Sequence[str], client_addrs: Sequence[str]) -> Iterator[Topology]:
        """Create both namespaces, the veth pair and the addresses; destroy everything on exit."""
        tag = f"{os.getpid()}{uuid.uuid4().hex[:6]}"
        topo = cls(host=f"hm-h-{tag}", client=f"hm-c-{tag}", host_if="veth-h", client_if="veth-c", tag=tag)
        try:
            run(None, "ip", "netns", "add", topo.host)
            run(None, "ip", "netns", "add", topo.client)
            run(topo.host, "ip", "link", "set", "lo", "up")
            topo._link(topo.client, topo.host_if, host_addrs, topo.client_if, client_addrs)
            yield topo
        finally:
            topo.close()

    def _link(
        self, peer: str, host_if: str, host_addrs: Sequence[str], peer_if: str, peer_addrs: Sequence[str]
    ) -> None:
        # Interface names are per-namespace, so fixed names are safe once moved; the temporary
        # names in the root namespace carry the tag.
        n = len(self._extra)
        tmp_h, tmp_p = f"vh{n}{self.tag}"[:15], f"vp{n}{self.tag}"[:15]
        run(None, "ip", "link", "add", tmp_h, "type", "veth", "peer", "name", tmp_p)
        run(None, "ip", "link", "set", tmp_h, "netns", self.host, "name", host_if)
        run(None, "ip", "link", "set", tmp_p, "netns", peer, "name", peer_if)
        run(peer, "ip", "link", "set", "lo", "up")
        for ns, ifname, addrs in ((self.host, host_if, host_addrs), (peer, peer_if, peer_addrs)):
            for addr in addrs:
                extra = ["nodad"] if ":" in addr else []
                run(ns, "ip", "addr", "add", addr, "dev", ifname, *extra)
            run(ns, "ip", "link", "set", ifname, "up")

    def add_peer(
        self,
        label: str,
        *,
        host_if: str,
        peer_addrs: Sequence[str],
        host_addrs: Sequence[str] = (),
        host_routes: Sequence[Sequence[str]] = (),
        peer_routes: Sequence[Sequence[str]] = (),
    ) -> str:
        """Another namespace linked to ``host`` by its own veth (peer side ``eth0``); returns its name.

        Routes are ``ip route add`` argument lists, e.g. ``["10.128.0.5/32", "dev", "vpod"]``. With no
        ``host_addrs`` the host side has no IPv4 address at all, like a pod's veth under many CNIs.
        """
        name = f"hm-{label}-{self.tag}"
        run(None, "ip", "netns", "add", name)
        self._extra.append(name)
        self._link(name, host_if, host_addrs, "eth0", peer_addrs)
        for route in host_routes:
            run(self.host, "ip", "route", "add", *route)
        for route in peer_routes:
            run(name, "ip", "route", "add", *route)
        return name

    def close(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=5)
        self._procs.clear()
        for ns in (self.host, self.client, *self._extra):
            # Deleting a namespace also destroys the veth end inside it (and so its peer).
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)

    def serve_banners(self, netns: str, banners: Mapping[int, str], *, timeout: float = 10.0) -> None:
        """Start a TCP server in netns answering each port with its banner; returns once it listens."""
        argv = [sys.executable, "-c", _SERVER, *(f"{port}={text}" for port, text in banners.items())]
        proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the server prints "ready" after listen(); EOF if it died
        if line.strip() != "ready":
            proc.kill()
            _, err = proc.communicate(timeout=timeout)
            raise RuntimeError(f"banner server in {netns} failed to start: {err.strip()}")

    def fetch_banner(self, netns: str, addr: str, port: int, *, timeout: float = 2.0) -> str:
        """Connect from netns to addr:port and return the first line received, or "error: ..."."""
        return run(netns, sys.executable, "-c", _CLIENT, addr, str(port), str(timeout)).strip()

    def wait_for_banner(self, netns: str, addr: str, port: int, *, deadline: float = 10.0) -> str:
        """Poll until addr:port answers (links and IPv6 neighbours take a moment); return the banner."""
        end = time.monotonic() + deadline
        while True:
            got = self.fetch_banner(netns, addr, port, timeout=1.0)
            if not got.startswith("error") or time.monotonic() > end:
                return got
            time.sleep(0.05)
