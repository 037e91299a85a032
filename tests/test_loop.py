"""The main loop's decisions with real files, real HAProxy validation and a real socket, on a fake clock."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from monitor.adapters.config_writer import ConfigWriter
from monitor.adapters.reloader import Reloader
from monitor.events import Connectivity, HealthObserved, Objects, StatsObserved, Stop, TemplateChanged
from monitor.inbox import coalesce
from monitor.loop import Monitor
from monitor.model import ServerState
from monitor.render import Renderer
from monitor.settings import Settings
from tests.test_reloader import Clock, LineServer

REPO = Path(__file__).resolve().parent.parent


def node(name: str, address: str) -> dict:
    return {"metadata": {"name": name}, "status": {"addresses": [{"type": "InternalIP", "address": address}]}}


NODES = (node("m0", "192.0.2.11"), node("m1", "192.0.2.12"), node("m2", "192.0.2.13"))


@pytest.fixture
def world(tmp_path: Path, haproxy_bin: str):
    template = tmp_path / "haproxy.cfg.j2"
    shutil.copy(REPO / "templates" / "haproxy.cfg.j2", template)
    template.chmod(0o640)
    cfg = tmp_path / "etc" / "haproxy.cfg"
    cfg.parent.mkdir()
    sock = tmp_path / "master.sock"
    settings = Settings(
        kubeconfig=tmp_path / "kubeconfig",
        template=template,
        cfg=cfg,
        api_vips=("192.0.2.10",),
        reload_socket=sock,
    )
    clock = Clock()
    monitor = Monitor(
        settings=settings,
        renderer=Renderer(template),
        writer=ConfigWriter(cfg=cfg, haproxy_bin=haproxy_bin),
        reloader=Reloader(socket_path=sock, clock=clock),
        networks=lambda: [],
        clock=clock,
    )
    monitor._load_template()

    class World:
        pass

    w = World()
    w.settings, w.clock, w.monitor, w.cfg, w.template, w.sock = settings, clock, monitor, cfg, template, sock
    return w


def servers(cfg: Path) -> list[str]:
    return [line.split()[1] for line in cfg.read_text().splitlines() if line.startswith("   server ")]


def test_the_first_backend_set_is_written_validated_and_reloaded(world):
    server = LineServer(world.sock)
    world.monitor.handle(Objects(NODES, server="https://api:6443"))
    world.monitor.tick()
    assert servers(world.cfg) == ["m0", "m1", "m2"]
    assert world.cfg.stat().st_mode & 0o777 == 0o640, "mode copied from the template, like the reference"
    server.close()
    server.thread.join(2)
    assert server.received == [b"reload\n"]
    ready, checks = world.monitor.status.readyz()
    assert ready, checks


def test_a_change_waits_for_the_settle_window_then_reloads_once(world):
    server = LineServer(world.sock)
    m = world.monitor
    m.handle(Objects(NODES))
    m.tick()
    world.clock.now = 10.0
    m.handle(Objects((*NODES[:2], node("m3", "192.0.2.14"))))
    m.tick()
    assert servers(world.cfg) == ["m0", "m1", "m2"], "not yet: the window is still open"
    world.clock.now = 10.0 + world.settings.settle
    m.tick()
    assert servers(world.cfg) == ["m0", "m1", "m3"]
    server.close()
    server.thread.join(2)
    assert server.received == [b"reload\n", b"reload\n"]


def test_an_identical_backend_set_from_a_relist_changes_nothing(world):
    server = LineServer(world.sock)
    m = world.monitor
    m.handle(Objects(NODES))
    m.tick()
    mtime = world.cfg.stat().st_mtime_ns
    world.clock.now = 100.0
    m.handle(Objects(tuple(reversed(NODES))))
    world.clock.now = 200.0
    m.tick()
    assert world.cfg.stat().st_mtime_ns == mtime
    server.close()
    server.thread.join(2)
    assert server.received == [b"reload\n"]


def test_a_broken_template_edit_is_logged_once_and_the_last_good_template_stays_in_use(world, caplog):
    caplog.set_level(logging.ERROR, logger="monitor")
    LineServer(world.sock)
    m = world.monitor
    m.handle(Objects(NODES))
    m.tick()
    good = world.cfg.read_bytes()
    world.template.write_text("global\n{% for %}\n")
    m.handle(TemplateChanged())
    m.handle(TemplateChanged())
    m.handle(Objects((*NODES, node("m9", "192.0.2.99"))))
    world.clock.now = 5.0
    m.tick()
    assert world.cfg.read_bytes() != good and "m9" in servers(world.cfg), "backend changes still apply"
    assert "{% for %}" not in world.cfg.read_text()
    errors = [r for r in caplog.records if "template syntax error" in r.getMessage()]
    assert len(errors) == 1, [r.getMessage() for r in caplog.records]
    assert m.status.readyz()[0] is False
    fixed = (REPO / "templates" / "haproxy.cfg.j2").read_text().replace("weight 1", "weight 2")
    world.template.write_text(fixed)
    m.handle(TemplateChanged())
    assert "weight 2" in world.cfg.read_text(), "the fixed template is rendered at once"
    assert m.status.readyz()[0] is True, m.status.readyz()[1]


def test_a_template_that_haproxy_rejects_never_replaces_the_live_config(world):
    LineServer(world.sock)
    m = world.monitor
    m.handle(Objects(NODES))
    m.tick()
    good = world.cfg.read_bytes()
    world.template.write_text(world.template.read_text() + "  this_is_not_a_keyword\n")
    m.handle(TemplateChanged())
    assert world.cfg.read_bytes() == good
    assert "HAProxy rejected" in (m.status.config_error or "")
    assert m.metrics.validation_errors._value.get() == 1


def test_a_missing_reload_socket_keeps_the_loop_running_and_delivers_when_it_appears(world):
    m = world.monitor
    m.handle(Objects(NODES))
    m.tick()
    assert servers(world.cfg) == ["m0", "m1", "m2"]
    assert m.status.reload_pending and "socket missing" in (m.status.reload_error or "")
    assert m.status.readyz()[0] is False
    for _ in range(3):
        world.clock.now = m.reloader.deadline() or world.clock.now
        m.tick()
    server = LineServer(world.sock)
    world.clock.now = m.reloader.deadline() or world.clock.now
    m.tick()
    assert not m.status.reload_pending
    server.close()
    server.thread.join(2)
    assert server.received == [b"reload\n"]


def test_an_unreachable_api_keeps_the_last_config_and_reports_not_ready(world):
    LineServer(world.sock)
    m = world.monitor
    m.handle(Objects(NODES, server="https://api:6443"))
    m.tick()
    good = world.cfg.read_bytes()
    m.handle(Connectivity(reachable=False, fallback=False, server="https://api:6443", error="api: refused"))
    m.tick()
    assert world.cfg.read_bytes() == good
    ready, checks = m.status.readyz()
    assert not ready and checks["api"] == "api: refused"


def test_a_stop_event_ends_the_loop(world):
    m = world.monitor
    m.post(Stop("SIGTERM"))
    assert m.run() == 0
    assert m.stopped.is_set()


def test_a_server_changing_state_in_haproxy_is_logged_once_per_change(world, caplog):
    caplog.set_level(logging.INFO, logger="monitor")
    m = world.monitor
    up = StatsObserved(
        servers=(ServerState("masters", "m1", "UP", "L7OK", 0), ServerState("masters", "m2", "UP", "L7OK", 3))
    )
    down = StatsObserved(
        servers=(
            ServerState("masters", "m1", "DOWN", "L7STS", 0),
            ServerState("masters", "m2", "UP", "L7OK", 1),
        )
    )
    for event in (up, up, down, down, down):
        m.handle(event)
    changes = [r for r in caplog.records if r.getMessage() == "server state changed"]
    assert len(changes) == 1
    assert changes[0].fields == {
        "proxy": "masters",
        "server": "m1",
        "old": "UP",
        "new": "DOWN",
        "check": "L7STS",
    }
    assert m.status.servers[("masters", "m2")] == ServerState("masters", "m2", "UP", "L7OK", 1)


def test_an_unreadable_stats_source_is_kept_in_status_and_left_to_the_reader_to_log(world, caplog):
    caplog.set_level(logging.INFO, logger="monitor")
    m = world.monitor
    for _ in range(3):
        m.handle(StatsObserved(error="stats socket /x: No such file or directory"))
    assert m.status.stats_error == "stats socket /x: No such file or directory"
    m.handle(StatsObserved(servers=(ServerState("masters", "m1", "UP", "L7OK", 0),)))
    assert m.status.stats_error is None
    assert caplog.records == [], "the stats reader says once which source it uses or why none answers"


def latency(m: Monitor) -> tuple[float | None, float | None]:
    sample = m.metrics.registry.get_sample_value
    return (
        sample("haproxy_monitor_apply_latency_seconds_count"),
        sample("haproxy_monitor_apply_latency_seconds_sum"),
    )


def test_apply_latency_runs_from_the_settled_backend_set_being_seen_to_its_config_being_written(world):
    LineServer(world.sock)
    m = world.monitor
    world.clock.now = 3.0
    m.handle(Objects(NODES))
    m.tick()
    assert latency(m) == (1.0, 0.0), "the first set is applied at once"
    world.clock.now = 10.0
    m.handle(Objects((*NODES[:2], node("m3", "192.0.2.14"))))
    world.clock.now = 10.5
    m.handle(Objects((*NODES[:2], node("m4", "192.0.2.15"))))  # the set that settles is seen from here
    world.clock.now = 10.5 + world.settings.settle
    m.tick()
    assert servers(world.cfg) == ["m0", "m1", "m4"]
    assert latency(m) == (2.0, world.settings.settle)
    world.clock.now = 30.0
    m.handle(Objects(NODES[:2]))
    m.handle(Objects((*NODES[:2], node("m4", "192.0.2.15"))))  # back to the applied set: nothing to apply
    world.clock.now = 40.0
    m.tick()
    assert latency(m) == (2.0, world.settings.settle)


def test_a_template_that_parses_but_fails_to_render_does_not_freeze_the_backend_list(world, caplog):
    caplog.set_level(logging.ERROR, logger="monitor")
    server = LineServer(world.sock)
    m = world.monitor
    m.handle(Objects(NODES))
    m.tick()
    world.template.write_text(world.template.read_text() + "{{ LBConfig.NoSuchField }}\n")
    m.handle(TemplateChanged())
    world.clock.now = 10.0
    m.handle(Objects((*NODES[:2], node("m7", "192.0.2.77"))))
    world.clock.now = 10.0 + world.settings.settle
    m.tick()
    m.handle(Objects((*NODES[:1], node("m7", "192.0.2.77"))))
    world.clock.now = 20.0
    m.tick()
    assert servers(world.cfg) == ["m0", "m7"], "the last template that rendered keeps HAProxy current"
    assert "NoSuchField" not in world.cfg.read_text()
    ready, checks = m.status.readyz()
    assert not ready and "NoSuchField" in str(checks["template"])
    assert len([r for r in caplog.records if "NoSuchField" in r.getMessage()]) == 1
    world.template.write_text((REPO / "templates" / "haproxy.cfg.j2").read_text())
    m.handle(TemplateChanged())
    assert m.status.readyz()[0] is True
    server.close()
    assert server.received.count(b"reload\n") == 3


def refused_gauge(m: Monitor) -> float | None:
    return m.metrics.registry.get_sample_value("haproxy_monitor_empty_backend_set_refused")


def test_an_empty_backend_set_never_replaces_a_non_empty_one_and_is_reported_until_backends_return(
    world, caplog
):
    caplog.set_level(logging.INFO, logger="monitor")
    server = LineServer(world.sock)
    m = world.monitor
    m.handle(Objects(NODES))
    m.tick()
    good = world.cfg.read_bytes()
    # The API answers with no control-plane node, then with only nodes that cannot be backends.
    for now, items in (
        (10.0, ()),
        (20.0, ()),
        (30.0, (node("bad name", "192.0.2.50"), node("m5", "127.0.0.1"))),
    ):
        world.clock.now = now
        m.handle(Objects(items))
        world.clock.now = now + world.settings.settle_max
        m.tick()
    assert world.cfg.read_bytes() == good, "the last non-empty set stays in HAProxy"
    ready, checks = m.status.readyz()
    assert not ready and checks["backends"] == "the API lists no usable backend; keeping the last 3"
    assert refused_gauge(m) == 1
    said = [r.getMessage() for r in caplog.records if r.name == "monitor.discovery"]
    assert [s for s in said if "no usable backend" in s] == [
        "the API lists no usable backend; keeping the last backend set"
    ], "logged once, however often the API says it"
    world.clock.now = 50.0
    m.handle(Objects(NODES[:2]))
    world.clock.now = 50.0 + world.settings.settle
    m.tick()
    assert servers(world.cfg) == ["m0", "m1"]
    assert m.status.readyz()[0] is True and m.status.readyz()[1]["backends"] == "ok"
    assert refused_gauge(m) == 0
    said = [r.getMessage() for r in caplog.records if r.name == "monitor.discovery"]
    assert said.count("the API lists backends again") == 1
    server.close()
    server.thread.join(2)
    assert server.received == [b"reload\n", b"reload\n"], "nothing was reloaded while refusing"


def test_a_non_empty_set_still_settling_is_kept_when_an_empty_one_follows(world):
    LineServer(world.sock)
    m = world.monitor
    m.handle(Objects(NODES))
    m.tick()
    world.clock.now = 10.0
    m.handle(Objects((*NODES[:2], node("m3", "192.0.2.14"))))
    world.clock.now = 10.5
    m.handle(Objects(()))
    world.clock.now = 20.0
    m.tick()
    assert servers(world.cfg) == ["m0", "m1", "m3"], "the last set the API listed is the one served"


def test_the_very_first_backend_set_may_be_empty_and_is_served_without_servers(world):
    LineServer(world.sock)
    m = world.monitor
    m.handle(Objects(()))
    m.tick()
    # Nothing to keep: HAProxy gets a config without servers, so its /haproxy_monitor fails and no rule steers
    # traffic to it; clients keep reaching the API servers on the VIP directly.
    assert world.cfg.exists() and servers(world.cfg) == []
    ready, checks = m.status.readyz()
    assert checks["backends"] == "none: the API lists no usable backend"
    assert ready, "the config is what the API says; the check says what that means"
    assert refused_gauge(m) == 0
    m.handle(Objects(NODES))
    world.clock.now = world.settings.settle
    m.tick()
    assert servers(world.cfg) == ["m0", "m1", "m2"]


def test_queued_events_coalesce_to_the_newest_full_set_and_a_stop_pre_empts_them_all():
    sets = [Objects((node(f"m{i}", f"192.0.2.{i + 1}"),)) for i in range(500)]
    health = HealthObserved(ok=True)
    batch = [sets[0], health, *sets[1:], TemplateChanged("a"), Connectivity(True, False, "s", None)]
    assert coalesce(batch) == [health, sets[-1], TemplateChanged("a"), Connectivity(True, False, "s", None)]
    assert coalesce([*sets, Stop("SIGTERM"), health]) == [Stop("SIGTERM")]
    assert coalesce([TemplateChanged("a"), TemplateChanged("b")]) == [TemplateChanged("b")]
