"""Jinja2 rendering of the shipped template, errors with file and line, and `monitor render`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from monitor.model import Backend, LBConfig
from monitor.render import Renderer, RenderError, template_language

REPO = Path(__file__).resolve().parent.parent
J2 = REPO / "templates" / "haproxy.cfg.j2"
THREE = LBConfig(
    api_port=6443,
    lb_port=9445,
    stat_port=29445,
    backends=(
        Backend("m0", "192.0.2.11", 6443),
        Backend("m1", "192.0.2.12", 6443),
        Backend("m2", "192.0.2.13", 6443),
    ),
)


def test_the_shipped_template_lists_every_backend_and_the_monitor_section():
    text = Renderer(J2).render(THREE)
    assert (
        "   server m1 192.0.2.12:6443 weight 1 verify none check check-ssl inter 5s fall 3 rise 1\n" in text
    )
    assert "bind :::9445 v4v6" in text
    assert "monitor-uri /haproxy_monitor" in text and "monitor fail if { nbsrv(masters) lt 1 }" in text
    assert "bind 127.0.0.1:9454" in text
    assert text.endswith("rise 1\n")


def test_with_no_backends_the_frontend_is_left_out_like_the_reference():
    text = Renderer(J2).render(LBConfig(api_port=6443, lb_port=9445, stat_port=29445))
    assert "frontend  main" not in text
    assert "backend masters" in text and "   server " not in text


@pytest.mark.haproxy
def test_haproxy_accepts_the_shipped_template_for_zero_one_and_three_backends(tmp_path, haproxy_bin):
    for n in (0, 1, 3):
        cfg = tmp_path / f"h{n}.cfg"
        cfg.write_text(Renderer(J2).render(LBConfig(6443, 9445, 29445, "", THREE.backends[:n])))
        proc = subprocess.run([haproxy_bin, "-c", "-f", str(cfg)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_syntax_error_names_the_template_file_and_line(tmp_path):
    bad = tmp_path / "bad.j2"
    bad.write_text("global\n{% if %}\n")
    with pytest.raises(RenderError) as err:
        Renderer(bad).load()
    assert str(err.value).startswith(f"{bad}:2: template syntax error")
    assert "\n" not in str(err.value)


def test_an_unknown_field_fails_loudly_with_the_line_instead_of_rendering_empty(tmp_path):
    bad = tmp_path / "unknown.j2"
    bad.write_text("global\n\n  bind :{{ LBConfig.NoSuchPort }}\n")
    with pytest.raises(RenderError) as err:
        Renderer(bad).render(THREE)
    assert str(err.value).startswith(f"{bad}:3:")
    assert "NoSuchPort" in str(err.value)


def test_a_missing_template_is_a_one_line_error(tmp_path):
    with pytest.raises(RenderError, match="cannot read template"):
        Renderer(tmp_path / "nope.j2").load()


def test_the_language_follows_the_file_name_unless_overridden():
    assert template_language(Path("x.tmpl")) == "go"
    assert template_language(Path("x.j2")) == "jinja2"
    assert template_language(Path("haproxy.cfg")) == "jinja2"
    assert template_language(Path("x.j2"), "go") == "go"


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "monitor", *args], capture_output=True, text=True, cwd=cwd)


def test_monitor_render_prints_the_rendering_for_json_data(tmp_path):
    data = tmp_path / "data.json"
    data.write_text(
        json.dumps(
            {
                "ApiPort": 6443,
                "LbPort": 9445,
                "StatPort": 29445,
                "FrontendAddr": "",
                "Backends": [{"Host": "m0", "Address": "192.0.2.11", "Port": 6443}],
            }
        )
    )
    proc = _cli("render", str(J2), str(data))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == Renderer(J2).render(
        LBConfig(6443, 9445, 29445, "", (Backend("m0", "192.0.2.11", 6443),))
    )


def test_monitor_render_fails_with_one_line_naming_the_template_line(tmp_path):
    tpl = tmp_path / "t.j2"
    tpl.write_text("a\nb {{ LBConfig.Bogus }}\n")
    data = tmp_path / "d.json"
    data.write_text('{"ApiPort": 1, "LbPort": 2, "StatPort": 3, "Backends": []}')
    proc = _cli("render", str(tpl), str(data))
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{tpl}:2" in lines[0]


def test_monitor_render_names_the_bad_json_field(tmp_path):
    data = tmp_path / "d.json"
    data.write_text('{"ApiPort": "x", "Backends": []}')
    proc = _cli("render", str(J2), str(data))
    assert proc.returncode == 1
    assert "ApiPort" in proc.stderr and str(data) in proc.stderr


def test_monitor_render_renders_go_templates_like_the_jinja_twin(tmp_path):
    data = tmp_path / "data.json"
    data.write_text(
        json.dumps(
            {
                "LBConfig": {
                    "ApiPort": 6443,
                    "LbPort": 9445,
                    "StatPort": 29445,
                    "FrontendAddr": "::",
                    "Backends": [{"Host": "m0", "Address": "2001:db8::11", "Port": 6443}],
                }
            }
        )
    )
    go = _cli("render", str(REPO / "templates" / "haproxy.cfg.tmpl"), str(data))
    j2 = _cli("render", str(J2), str(data))
    assert go.returncode == 0 and j2.returncode == 0, go.stderr + j2.stderr
    assert go.stdout == j2.stdout and "server m0 2001:db8::11:6443" in go.stdout


def test_monitor_render_reports_go_template_errors_with_template_and_line(tmp_path):
    tpl = tmp_path / "t.tmpl"
    tpl.write_text("ok\n{{ .LBConfig.LbPort }}\n{{ if }}\n")
    data = tmp_path / "d.json"
    data.write_text('{"ApiPort": 1, "LbPort": 2, "StatPort": 3, "Backends": []}')
    proc = _cli("render", str(tpl), str(data))
    assert proc.returncode == 1 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "t.tmpl:3" in lines[0], lines


def _hostile(kind: str, tmp: Path) -> tuple[Path, str]:
    """A path that must never be read as a template or data file, and the reason the error gives."""
    if kind == "fifo":
        path = tmp / "fifo.j2"
        os.mkfifo(path)  # no writer: a plain open() waits forever
        return path, "is a FIFO, not a regular file"
    if kind == "device":
        return Path("/dev/zero"), "is a character device, not a regular file"
    if kind == "directory":
        path = tmp / "dir.j2"
        path.mkdir()
        return path, "is a directory, not a regular file"
    path = tmp / "sparse.j2"
    with open(path, "wb") as fh:
        fh.truncate(100 * 1024 * 1024)
    return path, "is 100 MiB, larger than the"


HOSTILE = ["fifo", "device", "directory", "sparse-100MB"]


@pytest.mark.timeout(10)
@pytest.mark.parametrize("kind", HOSTILE)
def test_a_template_that_is_not_a_small_regular_file_is_a_quick_error_naming_it(tmp_path, kind):
    path, reason = _hostile(kind, tmp_path)
    start = time.monotonic()
    with pytest.raises(RenderError) as err:
        Renderer(path).load()
    took = time.monotonic() - start
    assert str(err.value).startswith(f"{path}: cannot read template: {reason}")
    assert took < 0.5, f"{took:.2f}s"


@pytest.mark.parametrize("kind", HOSTILE)
def test_monitor_render_refuses_a_data_file_that_is_not_a_small_regular_file(tmp_path, kind):
    path, reason = _hostile(kind, tmp_path)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "monitor", "render", str(J2), str(path)],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"monitor render blocked on {path}")
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith(f"monitor render: {path}: {reason}"), proc.stderr
