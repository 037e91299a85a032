"""StatusServer on loopback: JSON health endpoints, a Prometheus scrape, and clear bind errors."""

from __future__ import annotations

import http.client
import json
import socket
import statistics
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

from monitor.adapters.httpserver import ListenError, PortInUseError, StatusServer


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
