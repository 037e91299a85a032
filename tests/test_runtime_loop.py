"""What the loop says and counts about runtime changes: applies, fallbacks by reason, drains, the socket's absence."""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from monitor.adapters.config_writer import ConfigWriter
from monitor.adapters.reloader import Reloader
from monitor.adapters.runtime_api import RuntimeApi
from monitor.events import Objects
from monitor.loop import Monitor
from monitor.render import Renderer
from monitor.settings import Settings
from monitor.testbed.haproxy import FakeApiServer, HaproxyLab, free_port
from tests.test_reloader import Clock, LineServer

REPO = Path(__file__).resolve().parent.parent


def node(name: str, address: str) -> dict:
    return {"metadata": {"name": name}, "status": {"addresses": [{"type": "InternalIP", "address": address}]}}


def sample(monitor: Monitor, name: str, **labels: str) -> float:
    value = monitor.metrics.registry.get_sample_value(f"haproxy_monitor_{name}", labels)
    return value or 0.0


def settle(monitor: Monitor, clock: Clock, *nodes: dict) -> None:
    monitor.handle(Objects(nodes))
    clock.now += 100.0
    monitor.tick()


def until(monitor: Monitor, done: Callable[[], bool], *, timeout: float = 15) -> None:
    """Tick the loop (as its queue wait would) until ``done``; the handler answers in real time."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "not reached"
        monitor.tick()
        time.sleep(0.01)


def test_without_the_admin_socket_every_change_reloads_and_the_log_says_why_once(
    tmp_path: Path, haproxy_bin: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The reference's static pod: the sidecar shares the reload socket, not HAProxy's admin socket.
    caplog.set_level(logging.INFO, logger="monitor")
    template = tmp_path / "haproxy.cfg.j2"
    shutil.copy(REPO / "templates" / "haproxy.cfg.j2", template)
    cfg, sock = tmp_path / "haproxy.cfg", tmp_path / "master.sock"
    settings = Settings(
        kubeconfig=tmp_path / "kubeconfig",
        template=template,
        cfg=cfg,
        api_vips=("192.0.2.10",),
        reload_socket=sock,
        runtime_socket=tmp_path / "not-shared" / "haproxy.sock",
    )
    clock = Clock()
    monitor = Monitor(
        settings=settings,
        renderer=Renderer(template),
        writer=ConfigWriter(cfg=cfg, haproxy_bin=haproxy_bin),
        reloader=Reloader(socket_path=sock, clock=clock),
        networks=lambda: [],
        clock=clock,
        runtime=RuntimeApi(drain_timeout=1.0),
    )
    monitor._load_template()
    server = LineServer(sock)
    m0, m1, m2 = node("m0", "192.0.2.11"), node("m1", "192.0.2.12"), node("m2", "192.0.2.13")
    for k, nodes in enumerate([(m0,), (m0, m1), (m0, m1, m2)], start=1):
        settle(monitor, clock, *nodes)
        until(monitor, lambda k=k: sample(monitor, "reload_outcomes_total", outcome="unconfirmed") == k)
    server.close()
    server.thread.join(2)
    assert server.received == [b"reload\n"] * 3
    said = [r for r in caplog.records if "admin socket is not reachable" in r.getMessage()]
    assert len(said) == 1 and "not-shared" in said[0].fields["detail"]
    assert sample(monitor, "runtime_fallbacks_total", reason="admin socket unreachable") == 2
    assert sample(monitor, "runtime_applies_total") == 0
    silent = [r for r in caplog.records if "reload unconfirmed" in r.getMessage()]
    assert len(silent) == 1 and "answers nothing" in silent[0].fields["answer"]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[HaproxyLab, int]]:
    template = tmp_path / "haproxy.cfg.j2"
    template.write_text(
        (REPO / "templates" / "haproxy.cfg.j2").read_text().replace("inter 5s", "inter 300ms")
    )
    port = free_port()
    with contextlib.ExitStack() as stack:
        the_lab = stack.enter_context(HaproxyLab(workdir=tmp_path / "lab", template=template))
        for address in ("127.0.0.11", "127.0.0.12"):
            stack.enter_context(FakeApiServer(cert_dir=tmp_path / "pki", address=address, port=port))
        yield the_lab, port


def test_with_the_admin_socket_a_membership_change_is_counted_as_a_runtime_apply_not_a_reload(
    lab: tuple[HaproxyLab, int], haproxy_bin: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="monitor")
    the_lab, port = lab
    settings = Settings(
        kubeconfig=the_lab.workdir / "kubeconfig",
        template=the_lab.template_path,
        cfg=the_lab.cfg_path,
        api_vips=("127.0.0.10",),  # a loopback VIP admits loopback nodes: a single-host lab
        api_port=port,
        lb_port=the_lab.lb_port,
        stat_port=the_lab.stat_port,
        reload_socket=the_lab.master_socket,
        drain_timeout=0.5,
    )
    clock = Clock()
    monitor = Monitor(
        settings=settings,
        renderer=Renderer(the_lab.template_path),
        writer=ConfigWriter(cfg=the_lab.cfg_path, haproxy_bin=haproxy_bin),
        reloader=Reloader(socket_path=the_lab.master_socket, clock=clock),
        networks=lambda: [],
        clock=clock,
        runtime=RuntimeApi(drain_timeout=settings.drain_timeout),
    )
    monitor._load_template()
    the_lab.start_handler()
    m0, m1 = node("m0", "127.0.0.11"), node("m1", "127.0.0.12")
    settle(monitor, clock, m0)
    until(monitor, lambda: sample(monitor, "reload_outcomes_total", outcome="confirmed") == 1)
    the_lab.wait_until(lambda: "m0" in the_lab.servers(), timeout=15)
    masters = the_lab.masters()
    settle(monitor, clock, m0, m1)
    settle(monitor, clock, m1)
    assert the_lab.masters() == masters
    assert set(the_lab.servers()) == {"m1"}
    assert sample(monitor, "reloads_total") == 1  # the first config only
    assert sample(monitor, "runtime_applies_total") == 2
    assert sample(monitor, "drain_duration_seconds_count") == 1
    assert monitor.status.readyz()[1]["reload"] == "ok"
    lines = [r for r in caplog.records if "servers changed at runtime" in r.getMessage()]
    assert len(lines) == 2 and "drained" in lines[1].fields
