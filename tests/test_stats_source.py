"""Where per-server stats come from (admin socket, stats page, overrides) against a real HAProxy; deadlines, caps."""

from __future__ import annotations

import contextlib
import csv
import logging
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from monitor.adapters.health import check_health
from monitor.adapters.httpserver import StatusServer
from monitor.adapters.stats import (
    SCRAPE_TIMEOUT,
    StatsPageError,
    StatsSocketError,
    StatsSource,
    StatsUnavailable,
    fetch_stats,
    read_stats,
    read_stats_page,
)
from monitor.metrics import Metrics
from monitor.statsconfig import page_from_url
from monitor.testbed.haproxy import FakeApiServer, HaproxyLab
from tests.fakehttp import FakeHTTP

TEMPLATE = Path(__file__).resolve().parents[1] / "templates" / "haproxy.cfg.j2"
SMALL_CAP = 256 * 1024


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, haproxy_bin: str) -> Iterator[HaproxyLab]:
    tmp = tmp_path_factory.mktemp("stats-lab")
    with (
        HaproxyLab(workdir=tmp / "lab", template=TEMPLATE, haproxy=haproxy_bin) as lab,
        FakeApiServer(cert_dir=tmp / "pki", address="127.0.0.2") as api,
    ):
        lab.write_config(lab.render([api.backend("master-0")]))
        lab.start_handler()
        lab.wait_until(lambda: "master-0" in lab.servers(), timeout=15)
        yield lab


def page_url(lab: HaproxyLab, *, password: str = "Password") -> str:
    return f"http://Username:{password}@127.0.0.1:{lab.stat_port}/haproxy_stats"


def servers(source: StatsSource) -> set[str]:
    return {r.server for r in source.read() if r.is_server}


def stats_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str, dict[str, str]]]:
    return [
        (r.levelname, r.getMessage(), getattr(r, "fields", {}))
        for r in caplog.records
        if r.name == "monitor.stats"
    ]


def unreachable_socket_copy(lab: HaproxyLab, path: Path) -> Path:
    """The live config as the sidecar sees it in the pod: the admin socket's directory is not shared."""
    path.write_text(lab.cfg_path.read_text().replace(str(lab.admin_socket), "/nonexistent/run/haproxy.sock"))
    return path


@pytest.mark.haproxy
def test_the_admin_socket_named_in_the_rendered_config_is_used_when_it_can_be_opened(lab, caplog):
    caplog.set_level(logging.INFO, logger="monitor")
    source = StatsSource(cfg=lab.cfg_path)
    for _ in range(3):
        assert servers(source) == {"master-0"}
    assert stats_lines(caplog) == [
        (
            "INFO",
            "reading HAProxy statistics",
            {"source": f"socket {lab.admin_socket}", "from": str(lab.cfg_path)},
        )
    ]


@pytest.mark.haproxy
def test_the_stats_page_with_its_basic_auth_is_used_when_the_admin_socket_is_out_of_reach(
    lab, tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger="monitor")
    cfg = unreachable_socket_copy(lab, tmp_path / "haproxy.cfg")
    source = StatsSource(cfg=cfg)
    for _ in range(3):
        assert servers(source) == {"master-0"}
    ((level, message, fields),) = stats_lines(caplog)
    assert (level, message) == ("INFO", "reading HAProxy statistics")
    assert fields["source"] == f"page http://localhost:{lab.stat_port}/haproxy_stats;csv (user Username)"
    assert "/nonexistent/run/haproxy.sock: No such file or directory" in fields["skipped"]
    assert "Password" not in caplog.text


@pytest.mark.haproxy
def test_a_new_line_is_logged_only_when_the_source_changes(lab, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="monitor")
    cfg = unreachable_socket_copy(lab, tmp_path / "haproxy.cfg")
    source = StatsSource(cfg=cfg)
    servers(source)
    servers(source)
    cfg.write_text(lab.cfg_path.read_text() + "\n")  # a rewrite that makes the socket reachable again
    servers(source)
    servers(source)
    assert [f["source"].split()[0] for _, _, f in stats_lines(caplog)] == ["page", "socket"]


@pytest.mark.haproxy
def test_a_socket_that_failed_is_not_tried_every_cycle_while_the_page_answers(lab, tmp_path):
    """Pod layout, every check interval: once the page has answered, the config's admin socket (out of reach)
    is not connected to again, until the config changes; then it comes first again."""
    dead = tmp_path / "dead.sock"
    attempts = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(dead))
        listener.listen(8)
        listener.settimeout(0.1)
        cfg = tmp_path / "haproxy.cfg"

        def accept_all() -> None:
            while True:
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return  # the listener is closed: the test is over
                attempts.append(time.monotonic())  # recorded before the close our reader waits for
                conn.close()  # a socket that answers nothing: not HAProxy's

        def read_and_count() -> int:
            before = len(attempts)
            assert "master-0" in servers(source)
            return len(attempts) - before

        cfg.write_text(lab.cfg_path.read_text().replace(str(lab.admin_socket), str(dead)))
        source = StatsSource(cfg=cfg)
        thread = threading.Thread(target=accept_all, daemon=True)
        thread.start()
        first = wait_for_attempts(attempts, read_and_count, 1)
        later = [read_and_count() for _ in range(5)]
        cfg.write_text(cfg.read_text() + "\n")
        rewritten = wait_for_attempts(attempts, read_and_count, 1)
    thread.join(timeout=5)
    assert (first, sum(later), rewritten) == (1, 0, 1)


def wait_for_attempts(attempts: list[float], read: Callable[[], int], want: int) -> int:
    """One read, then the accept thread given until 5 s to have recorded ``want`` attempts (it runs apart)."""
    before = len(attempts)
    read()
    deadline = time.monotonic() + 5
    while len(attempts) - before < want and time.monotonic() < deadline:
        time.sleep(0.01)
    return len(attempts) - before


@pytest.mark.haproxy
def test_stats_url_overrides_a_reachable_socket_and_stats_socket_overrides_the_config(lab, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="monitor")
    assert servers(StatsSource(cfg=lab.cfg_path, url=page_url(lab))) == {"master-0"}
    assert servers(StatsSource(cfg=tmp_path / "never-written.cfg", socket_path=lab.admin_socket)) == {
        "master-0"
    }
    assert [(f["source"].split()[0], f["from"]) for _, _, f in stats_lines(caplog)] == [
        ("page", "--stats-url"),
        ("socket", "--stats-socket"),
    ]


@pytest.mark.haproxy
def test_wrong_stats_credentials_give_one_clear_error_line_without_the_password(lab, caplog):
    caplog.set_level(logging.INFO, logger="monitor")
    source = StatsSource(cfg=lab.cfg_path, url=page_url(lab, password="hunter2"))
    for _ in range(3):
        with pytest.raises(StatsUnavailable) as info:
            source.read()
    message = str(info.value)
    assert message == (
        f"stats page http://127.0.0.1:{lab.stat_port}/haproxy_stats;csv: HTTP 401, user 'Username' refused; "
        "check the 'stats auth' user and password"
    )
    assert stats_lines(caplog) == [("ERROR", "no HAProxy statistics source answers", {"reason": message})]
    assert "hunter2" not in caplog.text


def test_a_config_without_any_stats_source_says_what_to_do(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="monitor")
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text("global\n  maxconn 10\nfrontend main\n  bind :9445\n")
    with pytest.raises(
        StatsUnavailable, match=r"no 'stats socket' in global and no stats page .*--stats-url"
    ):
        StatsSource(cfg=cfg).read()
    with pytest.raises(StatsUnavailable, match="not written yet"):
        StatsSource(cfg=tmp_path / "missing.cfg").read()


# ---- misbehaving answers: the deadline and the size cap ---------------------------------------------------


@contextlib.contextmanager
def unix_server(path: Path, mode: str) -> Iterator[None]:
    """A unix socket that answers ``show stat`` far too slowly ("trickle") or with far too much ("huge")."""
    stop = threading.Event()
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(4)
    srv.settimeout(10)

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = srv.accept()
            with conn:
                conn.recv(100)
                conn.sendall(b"# pxname,svname,status,scur,stot,type,\n")
                while not stop.is_set():
                    if mode == "huge":
                        conn.sendall(b"x" * 65536)
                    else:
                        conn.sendall(b"m")
                        stop.wait(0.05)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)
        srv.close()


@pytest.mark.parametrize(
    ("mode", "message"), [("trickle", "within the deadline"), ("huge", "larger than 0.25 MiB")]
)
def test_a_slow_or_huge_socket_answer_is_cut_off_in_time(tmp_path, mode, message):
    path = tmp_path / "slow.sock"
    with unix_server(path, mode):
        start = time.monotonic()
        with pytest.raises(StatsSocketError, match=message):
            read_stats(path, timeout=0.5, max_bytes=SMALL_CAP)
        assert time.monotonic() - start < 0.5 + 0.3


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("trickle", "within the deadline"),
        ("hang", "within the deadline"),
        ("slow-headers", "within the deadline"),
        ("huge", "larger than 0.25 MiB"),
    ],
)
def test_a_slow_or_huge_stats_page_is_cut_off_in_time(mode, message):
    with FakeHTTP(mode).running() as fake:
        page = page_from_url(f"http://u:p@127.0.0.1:{fake.port}/haproxy_stats")
        start = time.monotonic()
        with pytest.raises(StatsPageError, match=message):
            read_stats_page(page, timeout=0.5, max_bytes=SMALL_CAP)
        assert time.monotonic() - start < 0.5 + 0.3


@pytest.mark.parametrize("mode", ["trickle", "huge"])
def test_a_scrape_answers_within_the_read_deadline_when_haproxy_misbehaves(tmp_path, mode):
    with FakeHTTP(mode).running() as fake:
        source = StatsSource(cfg=tmp_path / "unused.cfg", url=f"http://127.0.0.1:{fake.port}/haproxy_stats")
        metrics = Metrics()
        metrics.server_status(lambda: source.server_states(timeout=SCRAPE_TIMEOUT))
        server = StatusServer(
            listen="127.0.0.1:0",
            healthz=lambda: (True, {}),
            readyz=lambda: (True, {}),
            registry=metrics.registry,
        )
        server.start()
        try:
            start = time.monotonic()
            with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as resp:
                body = resp.read().decode()
            took = time.monotonic() - start
        finally:
            server.stop()
    assert "haproxy_monitor_stats_up 0.0" in body
    assert took < SCRAPE_TIMEOUT + 0.5, f"the scrape took {took:.2f}s"


def connections_accepted(lab: HaproxyLab, proxy: str) -> int:
    """HAProxy's own count of the connections a proxy has accepted (``conn_tot`` of its FRONTEND row)."""
    rows = list(csv.DictReader(fetch_stats(lab.admin_socket).removeprefix("# ").splitlines()))
    (row,) = [r for r in rows if r["pxname"] == proxy and r["svname"] == "FRONTEND"]
    return int(row["conn_tot"])


@pytest.mark.haproxy
def test_every_cycle_reuses_one_connection_and_a_reload_fails_no_read(tmp_path, haproxy_bin):
    """The health check and the stats read ride kept connections: HAProxy counts one connection for ten
    cycles. A reload retires the worker that holds them; every read after it still succeeds, and shows
    the new configuration's servers."""
    with (
        HaproxyLab(workdir=tmp_path / "lab", template=TEMPLATE, haproxy=haproxy_bin) as lab,
        FakeApiServer(cert_dir=tmp_path / "pki", address="127.0.0.2") as first,
        FakeApiServer(cert_dir=tmp_path / "pki", address="127.0.0.3") as second,
    ):
        lab.write_config(lab.render([first.backend("master-0")]))
        lab.start_handler()
        lab.wait_until(lambda: "master-0" in lab.servers(), timeout=15)
        page = page_from_url(page_url(lab))
        health_url = f"http://127.0.0.1:{lab.monitor_port}/haproxy_monitor"

        answered: list[int | None] = []

        def cycle() -> set[str]:
            answered.append(check_health(health_url, timeout=2).status)  # 200 or 503: an answer either way
            return {
                r.server for r in read_stats_page(page, timeout=2) if r.is_server
            }  # raises on a failed read

        before = {p: connections_accepted(lab, p) for p in ("stats", "health_check_monitor")}
        assert [cycle() for _ in range(10)] == [{"master-0"}] * 10
        after = {p: connections_accepted(lab, p) for p in ("stats", "health_check_monitor")}
        assert {p: after[p] - before[p] for p in after} == {"stats": 1, "health_check_monitor": 1}

        lab.write_config(lab.render([first.backend("master-0"), second.backend("master-1")]))
        lab.reload()
        seen = [cycle()]
        deadline = time.monotonic() + 15
        while seen[-1] != {"master-0", "master-1"}:
            assert time.monotonic() < deadline, f"the reloaded config's servers never showed: {seen[-3:]}"
            seen.append(cycle())
        assert {frozenset(s) for s in seen} <= {frozenset({"master-0"}), frozenset({"master-0", "master-1"})}
        assert None not in answered, "a health check got no HTTP answer"
