"""The apply pipeline reports what it did as a value: real template, real files, real HAProxy check, real socket."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from monitor.adapters.config_writer import ConfigWriter
from monitor.adapters.reloader import Reloader
from monitor.model import Backend, LBConfig
from monitor.pipeline import Pipeline
from monitor.render import Renderer
from monitor.status import Stage
from tests.test_reloader import Clock, LineServer

REPO = Path(__file__).resolve().parent.parent
CONFIG = LBConfig(
    api_port=6443,
    lb_port=9445,
    stat_port=29445,
    backends=(Backend("m0", "192.0.2.11", 6443), Backend("m1", "192.0.2.12", 6443)),
)


@pytest.fixture
def parts(tmp_path: Path, haproxy_bin: str):
    template = tmp_path / "haproxy.cfg.j2"
    shutil.copy(REPO / "templates" / "haproxy.cfg.j2", template)
    cfg = tmp_path / "haproxy.cfg"
    sock = tmp_path / "master.sock"
    clock = Clock()
    pipeline = Pipeline(
        template=Renderer(template),
        writer=ConfigWriter(cfg=cfg, haproxy_bin=haproxy_bin),
        reloader=Reloader(socket_path=sock, clock=clock),
        clock=clock,
    )
    return pipeline, template, cfg, sock


def test_a_new_config_is_written_and_the_reload_sent_in_one_pass(parts):
    pipeline, _, cfg, sock = parts
    server = LineServer(sock)
    result = pipeline.apply(CONFIG)
    server.close()
    assert result.stage_failed is None and result.written
    assert result.reload is not None and result.reload.sent
    assert cfg.read_text() == result.text and "192.0.2.12:6443" in result.text
    assert server.received == [b"reload\n"]


def test_identical_bytes_stop_before_the_write_and_send_no_reload(parts):
    pipeline, _, cfg, sock = parts
    server = LineServer(sock)
    pipeline.apply(CONFIG)
    mtime = cfg.stat().st_mtime_ns
    again = pipeline.apply(CONFIG)
    server.close()
    assert again.unchanged and not again.written and again.reload is None
    assert cfg.stat().st_mtime_ns == mtime
    assert server.received == [b"reload\n"]


def test_a_new_run_on_an_identical_file_reloads_once_when_no_admin_socket_can_tell(parts, haproxy_bin):
    # Without the admin socket nothing says whether the previous run reloaded after its last write.
    pipeline, template, cfg, sock = parts
    server = LineServer(sock)
    pipeline.apply(CONFIG)
    clock = Clock()
    next_run = Pipeline(
        template=Renderer(template),
        writer=ConfigWriter(cfg=cfg, haproxy_bin=haproxy_bin),
        reloader=Reloader(socket_path=sock, clock=clock),
        clock=clock,
    )
    first, second = next_run.apply(CONFIG), next_run.apply(CONFIG)
    server.close()
    assert (
        first.unchanged and first.start_reload is not None and first.reload is not None and first.reload.sent
    )
    assert second.unchanged and second.start_reload is None and second.reload is None
    assert server.received == [b"reload\n", b"reload\n"]


def test_a_config_haproxy_rejects_stops_at_the_validate_stage_with_the_text_it_would_have_written(parts):
    pipeline, template, cfg, _ = parts
    template.write_text(template.read_text() + "  this_is_not_a_keyword\n")
    pipeline.load_template()
    result = pipeline.apply(CONFIG)
    assert result.stage_failed is Stage.VALIDATE and "HAProxy rejected" in (result.error or "")
    assert result.text is not None and "this_is_not_a_keyword" in result.text
    assert not result.written and not cfg.exists()


def test_a_template_that_fails_to_render_is_replaced_by_the_last_one_that_rendered(parts):
    pipeline, template, cfg, sock = parts
    LineServer(sock)
    pipeline.apply(CONFIG)
    template.write_text(template.read_text() + "{{ LBConfig.NoSuchField }}\n")
    assert pipeline.load_template() is None, "it parses; it only fails to render"
    fewer = LBConfig(api_port=6443, lb_port=9445, stat_port=29445, backends=CONFIG.backends[:1])
    result = pipeline.apply(fewer)
    assert result.used_last_good_template and "NoSuchField" in (result.render_error or "")
    assert result.stage_failed is None and result.written
    assert "192.0.2.12" not in cfg.read_text()


def test_a_template_that_never_rendered_stops_at_the_render_stage(parts):
    pipeline, template, cfg, _ = parts
    template.write_text("global\n{{ LBConfig.NoSuchField }}\n")
    result = pipeline.apply(CONFIG)
    assert result.stage_failed is Stage.RENDER and result.text is None and not result.used_last_good_template
    assert not cfg.exists()


def test_a_missing_reload_socket_leaves_the_config_written_and_the_reload_pending(parts):
    pipeline, _, cfg, _ = parts
    result = pipeline.apply(CONFIG)
    assert result.written and cfg.exists()
    assert (
        result.reload is not None
        and not result.reload.sent
        and "socket missing" in (result.reload.error or "")
    )
    assert pipeline.reloader.deadline() is not None, "retried later by the loop's tick"
