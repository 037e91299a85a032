"""Templates that misbehave, and text that is not UTF-8: a clear error naming the file, the live config kept."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.adapters.config_writer import ConfigWriter
from monitor.adapters.reloader import Reloader
from monitor.events import Objects, TemplateChanged
from monitor.loop import Monitor
from monitor.model import Backend, LBConfig
from monitor.ports import WriteError
from monitor.render import MAX_OUTPUT_BYTES, Renderer, RenderError
from monitor.settings import Settings
from tests.test_loop import NODES, node, servers
from tests.test_reloader import Clock, LineServer

REPO = Path(__file__).resolve().parent.parent
ONE = LBConfig(6443, 9445, 29445, "", (Backend("m0", "192.0.2.11", 6443),))


def render(tmp_path: Path, name: str, source: str | bytes) -> str:
    path = tmp_path / name
    if isinstance(source, bytes):
        path.write_bytes(source)
    else:
        path.write_text(source)
    return Renderer(path).render(ONE)


# -- Jinja2 runs in its sandbox -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expression",
    [
        "''.__class__.__mro__",
        "''.__class__.__mro__[1].__subclasses__()",
        "self.__init__.__globals__",
        "cycler.__init__.__globals__.os",
        "lipsum.__globals__",
        "LBConfig.Backends.append(1)",
        "LBConfig.__class__",
    ],
)
def test_a_jinja_template_reaching_for_python_internals_gets_a_render_error_naming_the_file(
    tmp_path, expression
):
    with pytest.raises(RenderError) as caught:
        render(tmp_path, "evil.j2", "global\n  # {{ " + expression + " }}\n")
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'evil.j2'}:2: SecurityError: "), message
    assert "\n" not in message


def test_the_sandbox_still_renders_what_templates_do(tmp_path):
    source = (
        "{% set ns = namespace(n=0) %}{% for b in LBConfig.Backends %}{% set ns.n = ns.n + 1 %}"
        "server {{ b.Host | upper }} {{ b.Address }}:{{ b.Port }}{% endfor %} {{ ns.n }} "
        "{{ '%05d' % LBConfig.LbPort }} {{ 2 ** 10 }} {{ '-' * 3 }} "
        "{{ LBConfig.Backends | map(attribute='Host') | join(',') }}"
    )
    assert render(tmp_path, "ok.j2", source) == "server M0 192.0.2.11:6443 1 09445 1024 --- m0"


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("'x' * 10**8", "'*' would make a value of more than 16 MiB"),
        ("7 ** 10000000", "'**' would make a number"),
    ],
)
def test_a_jinja_expression_that_would_fill_memory_is_refused_before_it_is_computed(
    tmp_path, expression, reason
):
    # Constant expressions are folded while loading: the refusal must come before that, with the file named.
    with pytest.raises(RenderError) as caught:
        render(tmp_path, "big.j2", "{{ " + expression + " }}")
    assert str(caught.value).startswith(f"{tmp_path / 'big.j2'}:1: SecurityError: {reason}")


# -- rendered output has a size cap ---------------------------------------------------------------------

HUGE = {
    "huge.j2": "global\n{% for i in range(100000) %}# {{ 'x' * 1000 }}\n{% endfor %}",
    "huge.tmpl": 'global\n{{range .LBConfig.Backends}}{{range $.LBConfig.Backends}}{{range $.LBConfig.Backends}}'
    '# {{printf "%10000000d" 1}}\n{{end}}{{end}}{{end}}',
}  # fmt: skip


@pytest.mark.parametrize("name", HUGE)
def test_output_beyond_the_cap_is_one_line_naming_the_template(tmp_path, name):
    three = LBConfig(6443, 9445, 29445, "", tuple(Backend(f"m{i}", f"192.0.2.{i}", 6443) for i in (1, 2, 3)))
    (tmp_path / name).write_text(HUGE[name])
    with pytest.raises(RenderError) as caught:
        Renderer(tmp_path / name).render(three)
    assert (
        str(caught.value)
        == f"{tmp_path / name}: rendered output is larger than {MAX_OUTPUT_BYTES} bytes (16 MiB); refused"
    )


@pytest.fixture
def monitor_for(tmp_path: Path, haproxy_bin: str):
    """A Monitor with the real renderer, writer (``haproxy -c``) and reloader for a template source."""

    def build(name: str, source: str) -> tuple[Monitor, Path, Path, Clock]:
        template = tmp_path / name
        template.write_text(source)
        cfg = tmp_path / "etc" / "haproxy.cfg"
        cfg.parent.mkdir(exist_ok=True)
        sock = tmp_path / "master.sock"
        settings = Settings(
            kubeconfig=tmp_path / "kubeconfig",
            template=template,
            cfg=cfg,
            api_vips=("192.0.2.10",),
            reload_socket=sock,
        )
        LineServer(sock)
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
        monitor.handle(Objects(NODES))
        monitor.tick()
        return monitor, template, cfg, clock

    return build


def test_a_template_edit_that_renders_a_huge_config_leaves_the_live_config_untouched(monitor_for):
    m, template, cfg, clock = monitor_for(
        "haproxy.cfg.j2", (REPO / "templates" / "haproxy.cfg.j2").read_text()
    )
    good = cfg.read_bytes()
    template.write_text(template.read_text() + HUGE["huge.j2"].removeprefix("global\n"))
    m.handle(TemplateChanged())
    assert cfg.read_bytes() == good
    ready, checks = m.status.readyz()
    assert not ready and "rendered output is larger than" in str(checks["template"])
    m.handle(Objects((*NODES, node("m9", "192.0.2.99"))))
    clock.now = 10.0
    m.tick()
    assert servers(cfg) == ["m0", "m1", "m2", "m9"], "backend changes still apply with the last good template"


# -- text that is not UTF-8 -----------------------------------------------------------------------------


def test_a_template_that_is_not_utf8_is_an_error_naming_file_line_and_byte_offset(tmp_path):
    with pytest.raises(RenderError) as caught:
        render(tmp_path, "latin1.j2", b"global\n  # caf\xe9\n")
    assert str(caught.value) == (
        f"{tmp_path / 'latin1.j2'}:2: template is not UTF-8 text: byte 0xe9 at offset 14 (invalid continuation byte)"
    )


def test_a_go_template_writes_raw_bytes_like_go_and_haproxy_quoting_them_back_is_no_crash(monitor_for):
    source = (REPO / "templates" / "haproxy.cfg.tmpl").read_text()
    m, template, cfg, _ = monitor_for("haproxy.cfg.tmpl", source)
    good = cfg.read_bytes()
    # HAProxy rejects the unknown keyword and quotes its bytes, 0xff included, in its message.
    template.write_text(source + '  {{"\\xff\\xfe"}}bad_keyword\n')
    m.handle(TemplateChanged())
    assert cfg.read_bytes() == good
    error = m.status.config_error or ""
    assert "HAProxy rejected" in error and "\ufffd\ufffdbad_keyword" in error, error
    template.write_text(source + '  # {{"\\xff"}}\n')
    m.handle(TemplateChanged())
    assert cfg.read_bytes().endswith(b"  # \xff\n"), "the byte as Go writes it"


def test_a_rendered_character_utf8_cannot_encode_is_a_write_error_not_a_crash(tmp_path, haproxy_bin):
    writer = ConfigWriter(cfg=tmp_path / "haproxy.cfg", haproxy_bin=haproxy_bin)
    with pytest.raises(WriteError, match=r"a character UTF-8 cannot encode \('\\ud800' at offset 9\)"):
        writer.write("global\n# \ud800\n")
    assert not (tmp_path / "haproxy.cfg").exists()


def test_monitor_render_prints_a_go_templates_raw_bytes_whatever_the_locale(tmp_path):
    template = tmp_path / "t.tmpl"
    template.write_text('a {{"\\xff"}} {{.LBConfig.LbPort}}\n')
    data = tmp_path / "d.json"
    data.write_text(json.dumps({"ApiPort": 1, "LbPort": 2, "StatPort": 3, "Backends": []}))
    # A strict UTF-8 stdout, as under en_US.UTF-8 (C and C.UTF-8 escape surrogates on their own).
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}
    argv = [sys.executable, "-m", "monitor", "render", str(template), str(data)]
    proc = subprocess.run(argv, capture_output=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"a \xff 2\n"
