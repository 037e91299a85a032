"""Go-style error messages of the Go template engine: they name the template and the line."""

from __future__ import annotations

import pytest

from monitor.model import Backend, LBConfig
from monitor.render.data import go_data
from monitor.render.gotemplate import GoTemplateError, parse_go_template


def _parse_error(source: str, name: str = "haproxy.cfg.tmpl") -> GoTemplateError:
    with pytest.raises(GoTemplateError) as info:
        parse_go_template(source, name=name)
    return info.value


@pytest.mark.parametrize(
    ("source", "line", "message"),
    [
        ("ok\n{{ .a", 2, "unclosed action"),
        ("{{ .a }}\n\n{{ if .b }}x", 3, "unexpected EOF"),
        ("a\n{{ nope 1 }}", 2, 'function "nope" not defined'),
        ("{{ end }}", 1, "unexpected {{end}}"),
        ("{{ else }}", 1, "unexpected {{else}}"),
        ("x\ny\n{{ $v }}", 3, 'undefined variable "$v"'),
        ("{{/* never closed }}", 1, "unclosed comment"),
        ('{{ "abc }}', 1, "unterminated quoted string"),
        ("{{ break }}", 1, "{{break}} outside {{range}}"),
        ("{{ if }}{{ end }}", 1, "missing value for if"),
        ("{{ (1 }}", 1, "unclosed left paren"),
        ("{{ 1) }}", 1, 'unexpected ")" in command'),
        ("{{ 99999999999999999999 }}", 1, 'integer overflow: "99999999999999999999"'),
        ("{{ .a | 3 }}", 1, "non executable command in pipeline stage 2"),
        ('{{define "t"}}a{{end}}{{define "t"}}b{{end}}', 1, 'multiple definition of template "t"'),
    ],
)
def test_a_parse_error_names_the_template_and_the_line(source: str, line: int, message: str) -> None:
    error = _parse_error(source)
    assert str(error).startswith(f"template: haproxy.cfg.tmpl:{line}: ")
    assert message in str(error)
    assert error.name == "haproxy.cfg.tmpl"
    assert error.line == line
    assert "\n" not in str(error)


def test_an_action_spanning_lines_reports_where_it_started() -> None:
    error = _parse_error("{{ .a\n\n .b")
    assert str(error) == "template: haproxy.cfg.tmpl:3: unclosed action started at haproxy.cfg.tmpl:1"


def test_complex_constants_are_refused_with_a_clear_message() -> None:
    assert "complex constants are not supported" in str(_parse_error("{{ 1i }}"))


LB = LBConfig(api_port=6443, lb_port=9445, stat_port=29445, backends=(Backend("m0", "192.0.2.1", 6443),))


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            "line1\n  {{ .LBConfig.Nope }}",
            'template: t:2:14: executing "t" at <.LBConfig.Nope>: can\'t evaluate field Nope in type main.ApiLBConfig',
        ),
        (
            "{{ index .LBConfig.Backends 5 }}",
            'template: t:1:3: executing "t" at <index .LBConfig.Backends 5>: error calling index: '
            "index out of range: 5",
        ),
        (
            '{{ printf "%d" 1 | len 2 }}',
            'template: t:1:19: executing "t" at <len>: wrong number of args for len: want 1 got 2',
        ),
        (
            "{{ lt .LBConfig.ApiPort 1.5 }}",
            'template: t:1:3: executing "t" at <lt .LBConfig.ApiPort 1.5>: error calling lt: '
            "incompatible types for comparison",
        ),
        (
            '{{ template "missing" }}',
            'template: t:1:12: executing "t" at <{{template "missing"}}>: template "missing" not defined',
        ),
    ],
)
def test_an_execution_error_names_template_line_and_column_like_go(source: str, expected: str) -> None:
    with pytest.raises(GoTemplateError) as info:
        parse_go_template(source, name="t").execute(go_data(LB))
    assert str(info.value) == expected
    assert info.value.name == "t"


def test_undefined_data_is_an_error_for_structs_but_no_value_for_maps() -> None:
    template = parse_go_template("{{ .missing }}|{{ .a.missing.deeper }}", name="m")
    assert template.execute({"a": {}}) == "<no value>|<no value>"
    with pytest.raises(GoTemplateError, match="can't evaluate field missing"):
        parse_go_template("{{ .missing }}", name="s").execute(go_data(LB))
