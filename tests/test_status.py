"""One way to report a stage's failure and recovery: counted every time, shown in /readyz, logged once."""

from __future__ import annotations

import logging

from monitor.metrics import Metrics
from monitor.status import Stage, Status


def status(*, steering: bool = True) -> Status:
    return Status(
        metrics=Metrics(), clock=lambda: 0.0, wall=lambda: 0.0, check_interval=6.0, steering=steering
    )


def test_a_failing_stage_is_counted_every_time_shown_in_readyz_and_logged_once_until_it_recovers(caplog):
    caplog.set_level(logging.INFO, logger="monitor")
    s = status()
    for _ in range(3):
        s.failed(Stage.RELOAD, "reload socket /x: socket missing; retrying")
    s.reload_pending = True
    ready, checks = s.readyz()
    assert not ready and checks["reload"] == "reload socket /x: socket missing; retrying"
    assert s.metrics.registry.get_sample_value("haproxy_monitor_reload_failures_total") == 3
    s.reloaded()
    s.recovered(Stage.RELOAD)
    assert s.readyz()[1]["reload"] == "ok"
    lines = [(r.name, r.levelname, r.getMessage()) for r in caplog.records]
    assert lines == [
        ("monitor.reload", "ERROR", "reload socket /x: socket missing; retrying"),
        ("monitor.reload", "INFO", "reload socket accepts again"),
    ]


def test_stages_that_share_a_check_share_its_once_log(caplog):
    caplog.set_level(logging.ERROR, logger="monitor")
    s = status()
    s.failed(Stage.LOAD, "t.j2:2: template syntax error")
    s.failed(Stage.RENDER, "t.j2:2: template syntax error")
    assert s.template_error == "t.j2:2: template syntax error"
    assert s.metrics.registry.get_sample_value("haproxy_monitor_render_errors_total") == 2
    assert len(caplog.records) == 1


def test_an_unreadable_stats_source_shows_in_status_but_is_neither_counted_nor_logged_here(caplog):
    caplog.set_level(logging.DEBUG, logger="monitor")
    s = status(steering=False)
    s.failed(Stage.STATS, "stats socket /x: refused")
    assert s.stats_error == "stats socket /x: refused"
    s.recovered(Stage.STATS)
    assert s.stats_error is None and caplog.records == []
    assert s.readyz()[1]["steering"] == "off"
