"""Hostile Go templates: the engine answers with Go-style errors within fixed limits, never a Python exception."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.render.gotemplate import GoOutputTooLarge, GoTemplateError, parse_go_template
from monitor.render.gotemplate.parser import MAX_PARSE_DEPTH

DEEP = 10_000
NESTINGS = {
    "if": ("{{if 1}}" * DEEP + "x" + "{{end}}" * DEEP, "max nesting depth exceeded"),
    "with": ("{{with 1}}" * DEEP + "x" + "{{end}}" * DEEP, "max nesting depth exceeded"),
    "range": ("{{range .}}" * DEEP + "x" + "{{end}}" * DEEP, "max nesting depth exceeded"),
    "else-if": ("{{if 0}}" + "{{else if 0}}" * DEEP + "{{end}}", "max nesting depth exceeded"),
    "block": ("".join(f'{{{{block "b{i}" .}}}}' for i in range(DEEP)) + "{{end}}" * DEEP, "max nesting depth exceeded"),
    "parentheses": ("{{" + "(" * DEEP + "1" + ")" * DEEP + "}}", "max expression depth exceeded"),
    "argument parentheses": ("{{print " + "(print " * DEEP + "1" + ")" * DEEP + "}}", "max expression depth exceeded"),
    "unclosed parentheses": ("{{" + "(" * DEEP, "max expression depth exceeded"),
}  # fmt: skip


def from_deep_stack(depth: int, action: Callable[[], object]) -> object:
    """Run ``action`` with ``depth`` frames of a caller above it, as a busy program might."""
    if depth:
        return from_deep_stack(depth - 1, action)
    return action()


@pytest.mark.parametrize("kind", NESTINGS)
def test_ten_thousand_nested_levels_are_a_go_style_parse_error_naming_template_and_line(kind):
    source, message = NESTINGS[kind]
    with pytest.raises(GoTemplateError) as caught:
        from_deep_stack(300, lambda: parse_go_template(source, name="deep.tmpl"))
    assert str(caught.value) == f"template: deep.tmpl:1: {message}"


@pytest.mark.parametrize("kind", ["if", "range", "parentheses", "argument parentheses"])
def test_nesting_up_to_the_cap_renders_even_from_deep_in_a_caller_stack(kind):
    depth = MAX_PARSE_DEPTH
    source = {
        "if": "{{if 1}}" * depth + "x" + "{{end}}" * depth,
        "range": "{{range $.l}}" * depth + "x" + "{{end}}" * depth,
        "parentheses": "{{" + "(" * depth + '"x"' + ")" * depth + "}}",
        "argument parentheses": "{{print " + "(print " * (depth - 1) + '"x"' + ")" * (depth - 1) + "}}",
    }[kind]
    out = from_deep_stack(300, lambda: parse_go_template(source, name="t").execute({"l": [1]}))
    assert out == "x"


def test_infinite_template_recursion_ends_with_gos_own_error():
    template = parse_go_template(
        '{{define "a"}}{{if 1}}{{template "a" (print .)}}{{end}}{{end}}{{template "a" 1}}', name="r"
    )
    with pytest.raises(GoTemplateError) as caught:
        from_deep_stack(300, lambda: template.execute({}))
    assert str(caught.value).endswith(
        'executing "a" at <{{template "a" (print .)}}>: exceeded maximum template depth (100000)'
    )


def test_a_chain_of_ten_thousand_templates_calling_templates_is_a_go_style_error():
    source = "".join(f'{{{{define "t{i}"}}}}{{{{template "t{i + 1}" .}}}}{{{{end}}}}' for i in range(DEEP))
    template = parse_go_template(
        source + f'{{{{define "t{DEEP}"}}}}end{{{{end}}}}{{{{template "t0"}}}}', name="c"
    )
    with pytest.raises(GoTemplateError, match=r"exceeded maximum template depth \(100000\)$"):
        template.execute({})


def test_output_beyond_the_callers_limit_stops_the_run_with_an_error_naming_the_template():
    template = parse_go_template('{{range .}}{{printf "%1000000d" 1}}{{end}}', name="big.tmpl")
    assert len(template.execute(list(range(3)), limit=3_000_000)) == 3_000_000
    with pytest.raises(GoOutputTooLarge) as caught:
        template.execute(list(range(100_000)), limit=3_000_000)
    assert str(caught.value) == "template: big.tmpl: output exceeds the limit of 3000000 bytes"
    multibyte = parse_go_template("{{range .}}é{{end}}", name="utf8")
    with pytest.raises(GoOutputTooLarge):
        multibyte.execute(list(range(6)), limit=11)  # six characters, twelve bytes


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("%300000000d", "%!(NOVERB)%!(EXTRA int=1)"),
        ("%.300000000f", "%!(NOVERB)%!(EXTRA int=1)"),
        ("%0999999999999999999999999d", "%!(NOVERB)%!(EXTRA int=1)"),
    ],
)
def test_a_printf_width_beyond_gos_cap_prints_what_go_prints_instead_of_allocating_it(fmt, expected):
    assert parse_go_template(f'{{{{printf "{fmt}" 1}}}}', name="w").execute({}) == expected


TOKENS = [
    "{{", "}}", "{{-", " -}}", "(", ")", "if ", "else ", "end", "range ", "with ", "template ", "define ",
    "block ", '"a" ', "$x := ", "$x", ".", ".a ", "printf ", '"%*d" ', "1000001 ", "|", "len ", "break",
    "continue", "nil ", "x", "\n", "/*", "*/", "`", "'", "\\", "\x00", "\udcff",
]  # fmt: skip


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=40).map("".join))
def test_whatever_the_template_text_the_engine_raises_nothing_but_go_template_errors(source):
    try:
        parse_go_template(source, name="fuzz").execute({"a": [1, {"b": None}]}, limit=1 << 20)
    except GoTemplateError as exc:
        assert str(exc).startswith("template: ") and "\n" not in str(exc).strip()
