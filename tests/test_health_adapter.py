"""check_health against real loopback servers: refused, silent, non-200, garbage and healthy."""

from __future__ import annotations

import time
from pathlib import Path

from monitor.adapters.health import check_health
from tests.fakehttp import FakeHTTP, closed_port
from tests.netns import python_unshared


def test_a_200_is_healthy_and_reports_status_and_latency() -> None:
    with FakeHTTP("200").running() as srv:
        sample = check_health(srv.url, timeout=2.0)
    assert (sample.ok, sample.status) == (True, 200)
    assert 0 < sample.latency < 2.0
    assert sample.reason.startswith(f"200 from {srv.url} in ")


def test_a_refused_port_is_unhealthy_with_a_one_line_reason() -> None:
    with closed_port() as port:
        url = f"http://127.0.0.1:{port}/haproxy_monitor"
        sample = check_health(url, timeout=2.0)
    assert (sample.ok, sample.status) == (False, None)
    assert sample.reason == f"connection refused to {url}"


def test_a_server_that_never_answers_is_given_up_on_within_the_timeout() -> None:
    with FakeHTTP("hang").running() as srv:
        start = time.monotonic()
        sample = check_health(srv.url, timeout=0.5)
        took = time.monotonic() - start
    assert not sample.ok
    assert sample.reason == f"no answer from {srv.url} within 0.5s"
    assert 0.4 < took < 0.5 + 0.3


def test_a_trickling_body_does_not_hold_the_check_past_its_deadline() -> None:
    with FakeHTTP("trickle").running() as srv:
        start = time.monotonic()
        sample = check_health(srv.url, timeout=0.5)
        took = time.monotonic() - start
    assert took < 0.5 + 0.3
    assert sample.status == 200


def test_headers_that_never_end_are_cut_at_the_deadline_not_each_reads_timeout() -> None:
    # A byte every 50 ms resets any per-read timeout; only a deadline for the whole exchange ends this.
    with FakeHTTP("slow-headers").running() as srv:
        start = time.monotonic()
        sample = check_health(srv.url, timeout=0.5)
        took = time.monotonic() - start
    assert took < 0.5 + 0.3, f"took {took:.2f}s"
    assert not sample.ok and sample.reason == f"no answer from {srv.url} within 0.5s"


def test_a_503_is_unhealthy_and_names_the_status() -> None:
    with FakeHTTP("503").running() as srv:
        sample = check_health(srv.url, timeout=2.0)
    assert (sample.ok, sample.status) == (False, 503)
    assert sample.reason == f"HTTP 503 from {srv.url} (want 200)"


def test_garbage_instead_of_http_is_unhealthy() -> None:
    with FakeHTTP("garbage").running() as srv:
        sample = check_health(srv.url, timeout=2.0)
    assert not sample.ok and sample.status is None
    assert "\n" not in sample.reason and srv.url in sample.reason


def test_a_url_requests_cannot_use_is_unhealthy_not_an_exception() -> None:
    sample = check_health("nonsense://x", timeout=0.5)
    assert not sample.ok and "nonsense://x" in sample.reason


# Run in a private mount namespace whose /etc/hosts names "apihost" as ::1 first, then 127.0.0.1.
_MOVING_LISTENER = r"""
import json, socket, subprocess, sys
subprocess.run(["mount", "--bind", sys.argv[1], "/etc/hosts"], check=True)
from monitor.adapters.health import check_health
from tests.fakehttp import FakeHTTP
lookups = 0
resolve = socket.getaddrinfo
def counted(*args, **kwargs):
    global lookups
    lookups += 1
    return resolve(*args, **kwargs)
socket.getaddrinfo = counted
out = {}
with FakeHTTP("200", host="127.0.0.1").running() as v4:
    url = f"http://apihost:{v4.port}/haproxy_monitor"
    out["on 127.0.0.1"] = [check_health(url, timeout=2).ok for _ in range(5)]
    out["lookups"] = lookups
with FakeHTTP("200", host="::1", port=v4.port).running():
    out["moved to ::1"] = [check_health(url, timeout=2).ok for _ in range(3)]
out["lookups after the move"] = lookups
out["gone"] = check_health(url, timeout=2).reason
print(json.dumps(out))
"""


def test_a_named_health_url_is_resolved_once_and_again_when_the_listener_moves(tmp_path: Path) -> None:
    """Every cycle polls the URL: "localhost"-style names cost no lookup (nor a refused ::1 attempt) per
    check, yet a listener that moves to the name's other address is found on the next check."""
    hosts = tmp_path / "hosts"
    hosts.write_text("::1 apihost\n127.0.0.1 apihost\n")
    out = python_unshared(["--mount"], _MOVING_LISTENER, str(hosts))
    assert out["on 127.0.0.1"] == [True] * 5
    assert out["lookups"] == 1
    assert out["moved to ::1"] == [True] * 3
    assert out["lookups after the move"] == 2
    assert out["gone"].startswith("connection refused to http://apihost:")
