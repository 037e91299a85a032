"""StatusServer on loopback: JSON health endpoints, a Prometheus scrape, and clear bind errors."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

from monitor.adapters.httpserver import (
    BACKLOG,
    REQUEST_DEADLINE,
    ListenError,
    PortInUseError,
    StatusServer,
)


class Flags:
    """Mutable answers for the checks, flipped by the tests."""

    def __init__(self) -> None:
        self.healthy = True
        self.ready = False

    def healthz(self) -> tuple[bool, dict[str, object]]:
        return self.healthy, {"loop": "running" if self.healthy else "stalled"}

    def readyz(self) -> tuple[bool, dict[str, object]]:
        return self.ready, {"haproxy": "healthy" if self.ready else "unhealthy", "backends": 3}


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


@pytest.fixture
def registry() -> CollectorRegistry:
    reg = CollectorRegistry()
    Counter("haproxy_monitor_reloads", "Reloads", registry=reg).inc(2)
    return reg


@pytest.fixture
def flags() -> Flags:
    return Flags()


@pytest.fixture
def server(flags: Flags, registry: CollectorRegistry) -> Iterator[StatusServer]:
    srv = StatusServer(listen="127.0.0.1:0", healthz=flags.healthz, readyz=flags.readyz, registry=registry)
    srv.start()
    yield srv
    srv.stop()


def test_healthz_and_readyz_answer_200_or_503_with_their_json(server: StatusServer, flags: Flags) -> None:
    assert _get(f"{server.url}/healthz") == (200, "application/json", '{"loop": "running"}\n')
    code, ctype, body = _get(f"{server.url}/readyz")
    assert (code, ctype, json.loads(body)) == (
        503,
        "application/json",
        {"backends": 3, "haproxy": "unhealthy"},
    )
    flags.ready, flags.healthy = True, False
    assert _get(f"{server.url}/readyz")[0] == 200
    assert _get(f"{server.url}/healthz")[:2] == (503, "application/json")


def test_metrics_are_served_in_prometheus_text_format(server: StatusServer) -> None:
    code, ctype, body = _get(f"{server.url}/metrics")
    assert code == 200 and ctype.startswith("text/plain; version=0.0.4")
    samples = {s.name: s.value for f in text_string_to_metric_families(body) for s in f.samples}
    assert samples["haproxy_monitor_reloads_total"] == 2.0


def test_metrics_speak_openmetrics_when_the_scraper_asks_for_it(server: StatusServer) -> None:
    req = urllib.request.Request(f"{server.url}/metrics", headers={"Accept": "application/openmetrics-text"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
        assert resp.read().decode().endswith("# EOF\n")


def test_an_unknown_path_is_a_404_that_lists_the_endpoints(server: StatusServer) -> None:
    code, _, body = _get(f"{server.url}/nope")
    assert code == 404 and "/healthz, /readyz, /metrics" in body


def test_a_check_that_raises_answers_500_and_the_server_keeps_serving(
    registry: CollectorRegistry, flags: Flags
) -> None:
    def broken() -> tuple[bool, dict[str, object]]:
        raise RuntimeError("state not initialised")

    srv = StatusServer(listen="127.0.0.1:0", healthz=flags.healthz, readyz=broken, registry=registry)
    srv.start()
    try:
        code, _, body = _get(f"{srv.url}/readyz")
        assert code == 500 and "RuntimeError: state not initialised" in body
        assert _get(f"{srv.url}/healthz")[0] == 200
    finally:
        srv.stop()


def test_ipv6_loopback_is_accepted_in_brackets(registry: CollectorRegistry, flags: Flags) -> None:
    srv = StatusServer(listen="[::1]:0", healthz=flags.healthz, readyz=flags.readyz, registry=registry)
    srv.start()
    try:
        assert srv.url.startswith("http://[::1]:")
        assert _get(f"{srv.url}/healthz")[0] == 200
    finally:
        srv.stop()


def test_a_port_already_taken_gives_one_clear_error(registry: CollectorRegistry, flags: Flags) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        srv = StatusServer(
            listen=f"127.0.0.1:{port}", healthz=flags.healthz, readyz=flags.readyz, registry=registry
        )
        with pytest.raises(PortInUseError) as info:
            srv.start()
    assert str(info.value) == f"--listen 127.0.0.1:{port}: address already in use"


@pytest.mark.parametrize("listen", ["9448", "localhost", "::1:9448", "127.0.0.1:port", "127.0.0.1:70000"])
def test_a_malformed_listen_address_is_rejected_naming_the_option(
    listen: str, registry: CollectorRegistry, flags: Flags
) -> None:
    with pytest.raises(ListenError, match=r"^--listen "):
        StatusServer(listen=listen, healthz=flags.healthz, readyz=flags.readyz, registry=registry)


def test_stop_frees_the_port_for_a_new_server(
    server: StatusServer, flags: Flags, registry: CollectorRegistry
) -> None:
    port = server.port
    server.stop()
    again = StatusServer(
        listen=f"127.0.0.1:{port}", healthz=flags.healthz, readyz=flags.readyz, registry=registry
    )
    again.start()
    try:
        assert _get(f"{again.url}/healthz")[0] == 200
    finally:
        again.stop()


def _connect_idle(port: int, count: int) -> list[socket.socket]:
    """``count`` connections that send nothing (the kernel completes them whether or not they are accepted)."""
    out = []
    for _ in range(count):
        s = socket.socket()
        s.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            s.connect(("127.0.0.1", port))
        out.append(s)
    return out


def _closed_by_server(sock: socket.socket) -> bool:
    """True once the server closed or reset ``sock`` (a non-blocking or blocking-mode socket, never a timeout one)."""
    try:
        return sock.recv(1, socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True  # reset


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)
    return time.monotonic() - start


def test_a_client_trickling_its_request_a_byte_a_second_is_cut_after_the_request_deadline(
    server: StatusServer,
) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.settimeout(None)  # blocking mode: MSG_DONTWAIT then really returns at once
        start = time.monotonic()
        cut_after = None
        for byte in request:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                cut_after = time.monotonic() - start
                break
            if _closed_by_server(sock):
                cut_after = time.monotonic() - start
                break
            time.sleep(1.0)
            if time.monotonic() - start > REQUEST_DEADLINE + 5:
                break
    assert cut_after is not None, "never cut: one byte a second held the connection open"
    assert REQUEST_DEADLINE - 0.5 < cut_after < REQUEST_DEADLINE + 2, f"cut after {cut_after:.1f}s"


def test_at_most_max_connections_are_open_and_a_fresh_probe_is_answered_during_a_flood(
    registry: CollectorRegistry, flags: Flags
) -> None:
    srv = StatusServer(
        listen="127.0.0.1:0", healthz=flags.healthz, readyz=flags.readyz, registry=registry, max_connections=8
    )
    srv.start()
    idle = _connect_idle(srv.port, 100)
    try:
        # Everything is accepted quickly; only the 8 newest stay open, the others are closed to make room.
        _wait(lambda: sum(map(_closed_by_server, idle)) >= 92, timeout=10, what="the excess closed")
        assert srv.open_connections() <= 8
        start = time.monotonic()
        assert _get(f"{srv.url}/healthz")[0] == 200
        assert time.monotonic() - start < 1.0
    finally:
        for s in idle:
            s.close()
        srv.stop()


def test_the_listening_socket_has_a_normal_backlog(server: StatusServer) -> None:
    # For a listening socket, ss reports the backlog in Send-Q.
    out = subprocess.run(
        ["ss", "-ltnH", f"sport = :{server.port}"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert int(out[2]) == BACKLOG == 128


def test_stop_returns_at_once_even_with_clients_connected(registry: CollectorRegistry, flags: Flags) -> None:
    srv = StatusServer(listen="127.0.0.1:0", healthz=flags.healthz, readyz=flags.readyz, registry=registry)
    srv.start()
    idle = _connect_idle(srv.port, 10)
    _wait(lambda: srv.open_connections() == 10, timeout=5, what="10 open connections")
    start = time.monotonic()
    srv.stop()
    took = time.monotonic() - start
    for s in idle:
        s.close()
    assert took < 1.0, f"stop took {took:.2f}s"


SERVE_IN_SUBPROCESS = """
import sys, time
from prometheus_client import CollectorRegistry
from monitor.adapters.httpserver import StatusServer
s = StatusServer(listen="127.0.0.1:0", healthz=lambda: (True, {}), readyz=lambda: (True, {}),
                 registry=CollectorRegistry())
s.start()
print(s.port, flush=True)
sys.stdin.read()
"""


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_process_out_of_descriptors_does_not_spin_on_accept() -> None:
    # 24 descriptors: the interpreter and the listener take most, so a few connections exhaust the rest.
    proc = subprocess.Popen(
        ["prlimit", "--nofile=24:24", "--", sys.executable, "-c", SERVE_IN_SUBPROCESS],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    clients: list[socket.socket] = []
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        clients = [socket.create_connection(("127.0.0.1", port), timeout=2) for _ in range(30)]
        _wait(lambda: len(os.listdir(f"/proc/{proc.pid}/fd")) >= 24, timeout=5, what="descriptors exhausted")
        start_cpu, start = _cpu_seconds(proc.pid), time.monotonic()
        time.sleep(1.0)  # measuring CPU use over an interval: the interval is the point, not a wait
        share = (_cpu_seconds(proc.pid) - start_cpu) / (time.monotonic() - start)
        assert share < 0.3, f"{share:.0%} of a CPU while out of descriptors"
    finally:
        for c in clients:
            c.close()
        proc.kill()
        proc.wait(5)


def test_scrapes_on_one_keep_alive_connection_are_not_held_back_by_delayed_acks(server: StatusServer) -> None:
    # Prometheus keeps its connection open. With Nagle on, the body (a second small write after the headers)
    # waits for the client's delayed ACK: about 40 ms per scrape instead of about one.
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    took = []
    try:
        for _ in range(15):
            start = time.monotonic()
            conn.request("GET", "/metrics")
            resp = conn.getresponse()
            resp.read()
            took.append(time.monotonic() - start)
            assert resp.status == 200
    finally:
        conn.close()
    assert statistics.median(took) < 0.02, f"median {statistics.median(took) * 1000:.1f} ms per scrape"
