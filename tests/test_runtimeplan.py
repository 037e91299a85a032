"""Which config changes HAProxy takes at runtime, and the plan that takes it there: shipped templates, rendered."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.model import Backend, LBConfig
from monitor.render import Renderer
from monitor.runtimeplan import (
    AddServer,
    NotRuntime,
    RemoveServer,
    RuntimePlan,
    ServerLine,
    SetAddress,
    carried_state,
    plan,
    state_file,
)

REPO = Path(__file__).resolve().parent.parent
TEMPLATES = ["haproxy.cfg.j2", "haproxy.cfg.tmpl", "openshift-haproxy.cfg.tmpl"]
RENDERERS = {name: Renderer(REPO / "templates" / name) for name in TEMPLATES}


def render(backends: list[Backend], *, template: str = "haproxy.cfg.j2") -> str:
    config = LBConfig(api_port=6443, lb_port=9445, stat_port=29445, backends=tuple(backends))
    return RENDERERS[template].render(config)


def served(text: str) -> dict[str, tuple[str, int, tuple[str, ...]]]:
    """What a fresh HAProxy would run from ``text``, as the plan sees servers (by a second, naive reading)."""
    out = {}
    backend = ""
    for line in text.splitlines():
        w = line.split()
        if w[:1] == ["backend"]:
            backend = w[1]
        elif w[:1] == ["server"] and backend:
            host, _, port = w[2].rpartition(":")
            out[f"{backend}/{w[1]}"] = (host, int(port), tuple(w[3:]))
    return out


def run(steps: tuple, start: dict[str, tuple[str, int, tuple[str, ...]]]) -> dict:
    """The plan's steps played on a server table, the way HAProxy applies the commands."""
    table = dict(start)
    for step in steps:
        s: ServerLine = step.server
        match step:
            case SetAddress():
                assert s.key in table, f"address change of an unknown server {s.key}"
                table[s.key] = (s.address, s.port, table[s.key][2])
            case AddServer():
                assert s.key not in table, f"{s.key} added twice"
                table[s.key] = (s.address, s.port, s.keywords)
            case RemoveServer():
                del table[s.key]
    return table


A, B, C = (
    Backend("m0", "192.0.2.10", 6443),
    Backend("m1", "192.0.2.11", 6443),
    Backend("m2", "192.0.2.12", 6443),
)


@pytest.mark.parametrize("template", TEMPLATES)
def test_an_address_change_of_one_master_is_one_set_server_addr_step(template: str) -> None:
    moved = Backend("m1", "192.0.2.99", 7443)
    result = plan(render([A, B], template=template), render([A, moved], template=template))
    assert isinstance(result, RuntimePlan)
    assert [type(s) for s in result.steps] == [SetAddress]
    assert result.steps[0].server.endpoint == "192.0.2.99:7443"


@pytest.mark.parametrize("template", TEMPLATES)
def test_a_new_master_is_added_with_the_keywords_of_its_rendered_line(template: str) -> None:
    result = plan(render([A, B], template=template), render([A, B, C], template=template))
    assert isinstance(result, RuntimePlan)
    (step,) = result.steps
    assert isinstance(step, AddServer) and step.server.key == "masters/m2"
    assert step.server.keywords == (
        "weight",
        "1",
        "verify",
        "none",
        "check",
        "check-ssl",
        "inter",
        "5s",
        "fall",
        "3",
        "rise",
        "1",
    )
    assert [s.name for s in result.before["masters"]] == ["m0", "m1"]
    assert [s.name for s in result.after["masters"]] == ["m0", "m1", "m2"]


def test_additions_come_before_removals_so_that_capacity_never_dips() -> None:
    result = plan(render([A, B]), render([A, C]))
    assert isinstance(result, RuntimePlan)
    assert [type(s) for s in result.steps] == [AddServer, RemoveServer]


def test_a_changed_port_anywhere_else_needs_a_reload() -> None:
    old = render([A, B])
    new = old.replace("bind :::9445", "bind :::9446")
    assert plan(old, new) == NotRuntime("not only servers changed")


def test_changed_server_keywords_need_a_reload() -> None:
    old = render([A, B])
    new = old.replace("inter 5s", "inter 2s", 1)
    result = plan(old, new)
    assert isinstance(result, NotRuntime) and result.reason == "server keywords changed"


def test_an_added_server_under_a_default_server_line_needs_a_reload() -> None:
    old = render([A]).replace("backend masters\n", "backend masters\n  default-server inter 2s\n")
    new = render([A, B]).replace("backend masters\n", "backend masters\n  default-server inter 2s\n")
    result = plan(old, new)
    assert isinstance(result, NotRuntime) and result.reason == "default-server"


def test_a_server_given_by_hostname_needs_a_reload() -> None:
    old = render([A])
    new = old.replace("192.0.2.10:6443", "master-0.example:6443")
    result = plan(old, new)
    assert isinstance(result, NotRuntime) and "not an IP address" in result.detail


def test_the_first_backend_of_an_empty_set_needs_a_reload_when_the_template_adds_sections_with_it() -> None:
    # The shipped templates open the frontend only when there is a backend.
    assert plan(render([]), render([A])) == NotRuntime("not only servers changed")


def test_server_lines_of_a_listen_section_are_not_taken_at_runtime() -> None:
    old = "listen api\n  bind :1\n  server a 192.0.2.1:1\n"
    assert plan(old, old.replace("192.0.2.1", "192.0.2.2")) == NotRuntime("not only servers changed")


def test_ipv6_servers_are_planned_with_their_address_unbracketed() -> None:
    v6a, v6b = Backend("m0", "fd00::10", 6443), Backend("m0", "fd00::11", 6443)
    result = plan(render([v6a]), render([v6b]))
    assert isinstance(result, RuntimePlan)
    assert (
        result.steps[0].server.address == "fd00::11" and result.steps[0].server.endpoint == "[fd00::11]:6443"
    )


_octet = st.integers(min_value=1, max_value=254)
_backend = st.builds(
    Backend,
    host=st.sampled_from([f"master-{i}" for i in range(6)]),
    address=st.builds(lambda a, b: f"10.0.{a}.{b}", _octet, _octet),
    port=st.sampled_from([6443, 7443]),
)
_backends = st.lists(_backend, min_size=1, max_size=6, unique_by=lambda b: b.host)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(old=_backends, new=_backends, template=st.sampled_from(TEMPLATES))
def test_playing_the_plan_on_the_live_servers_gives_exactly_the_servers_of_the_new_file(
    old: list[Backend], new: list[Backend], template: str
) -> None:
    live, rendered = render(old, template=template), render(new, template=template)
    result = plan(live, rendered)
    assert isinstance(result, RuntimePlan), result
    assert run(result.steps, served(live)) == served(rendered)
    removed = {s.server.key for s in result.steps if isinstance(s, RemoveServer)}
    assert removed == {f"masters/{b.host}" for b in old} - {f"masters/{b.host}" for b in new}


STATE_HEADER = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state ... srv_port ...\n"


def state_line(name: str, address: str, port: int) -> str:
    return f"6 masters 1 {name} {address} 0 0 1 1 90 15 3 0 6 0 0 0 - {port} - 0 0 - - 0"


def test_only_servers_the_new_config_keeps_as_they_are_carry_their_state_over_a_reload() -> None:
    # HAProxy 2.6 applies a state line's port over the config's: a moved server must start afresh.
    state = STATE_HEADER + "\n".join(
        [
            state_line("m0", "192.0.2.10", 6443),
            state_line("m1", "192.0.2.11", 6443),
            state_line("gone", "192.0.2.1", 1),
        ]
    )
    kept = carried_state(state, render([A, Backend("m1", "192.0.2.11", 7443)]))
    assert kept == STATE_HEADER + state_line("m0", "192.0.2.10", 6443) + "\n"


def test_the_shipped_jinja2_and_go_templates_name_a_state_file_the_monitor_can_write() -> None:
    for template in ("haproxy.cfg.j2", "haproxy.cfg.tmpl"):
        text = render([A], template=template)
        assert state_file(text) == "/var/run/haproxy/haproxy.state"  # the run directory both containers share
        assert "load-server-state-from-file global" in text
    assert state_file(render([A], template="openshift-haproxy.cfg.tmpl")) is None  # the reference, unchanged
