"""templates/haproxy.cfg.tmpl (Go syntax) renders exactly like its Jinja2 twin templates/haproxy.cfg.j2."""

from __future__ import annotations

from pathlib import Path

import jinja2
import pytest

from monitor.model import Backend, LBConfig
from monitor.render.data import go_data, jinja_data
from monitor.render.gotemplate import parse_go_template

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"

CONFIGS = {
    "ipv4": LBConfig(
        api_port=6443,
        lb_port=9445,
        stat_port=29445,
        backends=(
            Backend("master-0", "192.0.2.10", 6443),
            Backend("master-1", "192.0.2.11", 6443),
            Backend("master-2", "192.0.2.12", 6443),
        ),
    ),
    "ipv6": LBConfig(
        api_port=6443,
        lb_port=9445,
        stat_port=29445,
        frontend_addr="::",
        backends=(Backend("m0", "2001:db8::10", 6443), Backend("m1", "2001:db8::11", 6443)),
    ),
    "empty": LBConfig(api_port=6443, lb_port=9445, stat_port=29445),
}


def _render_j2(config: LBConfig) -> str:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.from_string((TEMPLATES / "haproxy.cfg.j2").read_text()).render(jinja_data(config))


@pytest.mark.parametrize("key", sorted(CONFIGS))
def test_the_go_template_twin_renders_the_same_bytes_as_the_jinja2_template(key: str) -> None:
    config = CONFIGS[key]
    expected = _render_j2(config)
    template = parse_go_template((TEMPLATES / "haproxy.cfg.tmpl").read_text(), name="haproxy.cfg.tmpl")
    got = template.execute(go_data(config))
    assert got == expected
    for backend in config.backends:
        assert f"server {backend.host} {backend.address}:{backend.port} " in got
    assert ("frontend  main" in got) == bool(config.backends)
