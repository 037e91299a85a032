"""Hypothesis strategies for random Go templates and JSON data (kept to constructs both sides model)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

KEYS = ["a", "b", "c", "X", "Host"]
TEXT_ALPHABET = "ab <>&'\"\n\t é-:/.\\%"
STRING_ALPHABET = "ab <>&'\"\n é%=+?\x01"
FUNCS = [
    "and", "or", "not", "len", "index", "slice", "print", "printf", "println",
    "eq", "ne", "lt", "le", "gt", "ge", "html", "js", "urlquery",
]  # fmt: skip
VARS = ["$x", "$y", "$i", "$e"]

scalars = st.one_of(
    st.integers(-5, 300),
    st.integers(-(1 << 63), (1 << 63) - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 1.0, 2.5, 1e21, 1e-7, -0.5, 100000.0, 1234567.0, 0.1]),
    st.text(alphabet=STRING_ALPHABET, max_size=6),
    st.booleans(),
    st.none(),
)
json_values = st.recursive(
    scalars,
    lambda kids: st.one_of(
        st.lists(kids, max_size=4), st.dictionaries(st.sampled_from(KEYS), kids, max_size=4)
    ),
    max_leaves=12,
)
root_data = st.one_of(st.dictionaries(st.sampled_from(KEYS), json_values, max_size=5), json_values)


def _go_string_literal(text: str) -> str:
    out = ['"']
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ord(ch) < 0x20:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


@st.composite
def format_strings(draw: st.DrawFn) -> str:
    parts = []
    for _ in range(draw(st.integers(0, 3))):
        if draw(st.booleans()):
            parts.append(draw(st.text(alphabet="ab :|", max_size=3)))
        verb = draw(st.sampled_from("vdsqxXtfegcT%"))
        flags = "".join(
            draw(st.lists(st.sampled_from("-+ 0" + ("#" if verb in "xXoqv" else "")), max_size=2))
        )
        width = draw(st.sampled_from(["", "", "1", "5", "8"]))
        prec = draw(st.sampled_from(["", "", ".0", ".2", "."]))
        parts.append("%" + flags + width + prec + verb)
    return _go_string_literal("".join(parts))


@st.composite
def operands(draw: st.DrawFn, scope: tuple[str, ...], depth: int, keys: tuple[str, ...]) -> str:
    kinds = ["dot", "field", "field2", "root", "int", "float", "string", "raw", "char", "bool", "nil"]
    if len(scope) > 1:
        kinds += ["var", "var", "varfield"]
    if depth < 2:
        kinds += ["paren", "paren", "parenfield"]
    kind = draw(st.sampled_from(kinds))
    key = draw(st.sampled_from(keys))
    if kind == "dot":
        return "."
    if kind == "field":
        return "." + key
    if kind == "field2":
        return "." + key + "." + draw(st.sampled_from(keys))
    if kind == "root":
        return draw(st.sampled_from(["$", "$." + key]))
    if kind == "int":
        return str(draw(st.integers(-3, 300)))
    if kind == "float":
        return draw(st.sampled_from(["1.5", "0.0", "-2.25", "1e3", "1e21", "3.0", ".5", "1e-7"]))
    if kind == "string":
        return _go_string_literal(draw(st.text(alphabet=STRING_ALPHABET, max_size=5)))
    if kind == "raw":
        return "`" + draw(st.text(alphabet="ab <&\"'\n", max_size=4)) + "`"
    if kind == "char":
        return draw(st.sampled_from(["'a'", "'\\n'", "'é'", "'0'"]))
    if kind == "bool":
        return draw(st.sampled_from(["true", "false"]))
    if kind == "nil":
        return "nil"
    if kind == "var":
        return draw(st.sampled_from(scope))
    if kind == "varfield":
        return draw(st.sampled_from(scope)) + "." + key
    inner = draw(pipelines(scope, depth + 1, keys))
    if kind == "paren":
        return "(" + inner + ")"
    return "(" + inner + ")." + key


@st.composite
def commands(
    draw: st.DrawFn, scope: tuple[str, ...], depth: int, keys: tuple[str, ...], *, piped: bool
) -> str:
    func = draw(st.sampled_from(FUNCS))
    low = 0 if piped else 1
    args = [draw(operands(scope, depth, keys)) for _ in range(draw(st.integers(low, 3)))]
    if func == "printf" and not piped and draw(st.integers(0, 4)) > 0:
        args[0] = draw(format_strings())
    return " ".join([func, *args])


@st.composite
def pipelines(draw: st.DrawFn, scope: tuple[str, ...], depth: int, keys: tuple[str, ...]) -> str:
    use_operand = draw(st.booleans())
    stages = [
        draw(operands(scope, depth, keys)) if use_operand else draw(commands(scope, depth, keys, piped=False))
    ]
    for _ in range(draw(st.integers(0, 2 if depth == 0 else 1))):
        stages.append(draw(commands(scope, depth, keys, piped=True)))
    return " | ".join(stages)


def _delims(draw: st.DrawFn) -> tuple[str, str]:
    left = draw(st.sampled_from(["{{", "{{ ", "{{- "]))
    right = draw(st.sampled_from(["}}", " }}", " -}}"]))
    return left, right


@st.composite
def item_lists(
    draw: st.DrawFn,
    scope: tuple[str, ...],
    in_range: bool,
    depth: int,
    has_template: bool,
    keys: tuple[str, ...],
) -> str:
    parts = []
    for _ in range(draw(st.integers(0, 4 if depth < 2 else 2))):
        kinds = ["text", "text", "action", "action", "action", "decl", "comment"]
        if depth < 3:
            kinds += ["if", "range", "with"]
        if in_range:
            kinds += ["break", "continue"]
        if has_template:
            kinds.append("template")
        if len(scope) > 1:
            kinds.append("assign")
        kind = draw(st.sampled_from(kinds))
        left, right = _delims(draw)
        if kind == "text":
            parts.append(draw(st.text(alphabet=TEXT_ALPHABET, max_size=8)))
        elif kind == "action":
            parts.append(left + draw(pipelines(scope, 0, keys)) + right)
        elif kind == "decl":
            var = draw(st.sampled_from(VARS))
            parts.append(left + var + " := " + draw(pipelines(scope, 0, keys)) + right)
            scope = (*scope, var)
        elif kind == "assign":
            var = draw(st.sampled_from(scope[1:]))
            parts.append(left + var + " = " + draw(pipelines(scope, 0, keys)) + right)
        elif kind == "comment":
            trim_left, trim_right = draw(st.booleans()), draw(st.booleans())
            parts.append(("{{- " if trim_left else "{{") + "/* c */" + (" -}}" if trim_right else "}}"))
        elif kind in ("break", "continue"):
            parts.append("{{" + kind + "}}")
        elif kind == "template":
            parts.append(left + 'template "T" ' + draw(pipelines(scope, 0, keys)) + right)
        else:
            head = draw(pipelines(scope, 0, keys))
            inner_scope = scope
            body_in_range = in_range
            if kind == "range":
                body_in_range = True
                form = draw(st.integers(0, 2))
                if form == 1:
                    head = "$e := " + head
                    inner_scope = (*scope, "$e")
                elif form == 2:
                    head = "$i, $e := " + head
                    inner_scope = (*scope, "$i", "$e")
            text = left + kind + " " + head + right
            text += draw(item_lists(inner_scope, body_in_range, depth + 1, has_template, keys))
            if kind == "if" and draw(st.booleans()):
                text += "{{else if " + draw(pipelines(scope, 0, keys)) + "}}"
                text += draw(item_lists(scope, in_range, depth + 1, has_template, keys))
            if draw(st.booleans()):
                text += "{{else}}" + draw(
                    item_lists(
                        inner_scope if kind != "range" else scope, in_range, depth + 1, has_template, keys
                    )
                )
            text += "{{end}}"
            parts.append(text)
    return "".join(parts)


@st.composite
def templates(draw: st.DrawFn, keys: tuple[str, ...] = tuple(KEYS)) -> str:
    has_template = draw(st.integers(0, 4)) == 0
    prefix = ""
    if has_template:
        prefix = '{{define "T"}}' + draw(item_lists(("$",), False, 1, False, keys)) + "{{end}}"
    return prefix + draw(item_lists(("$",), False, 0, has_template, keys))


cases = st.tuples(templates(), root_data)

# LBConfig (struct) mode: field names of the reference's types, data that fits them.
LB_KEYS = (
    "LBConfig",
    "ApiPort",
    "LbPort",
    "StatPort",
    "Backends",
    "FrontendAddr",
    "Host",
    "Address",
    "Port",
    "Nope",
)
ports = st.one_of(st.sampled_from([0, 1, 6443, 9445, 29445, 65535]), st.integers(0, 65535))
host_names = st.text(alphabet="abm-0.<&>'\"é ", max_size=12)
addresses = st.sampled_from(
    ["192.0.2.10", "10.0.0.1", "0.0.0.0", "2001:db8::10", "::1", "::", "fe80::1%eth0"]
)
lbconfigs = st.fixed_dictionaries(
    {
        "ApiPort": ports,
        "LbPort": ports,
        "StatPort": ports,
        "FrontendAddr": st.sampled_from(["", "::"]),
        "Backends": st.lists(
            st.fixed_dictionaries({"Host": host_names, "Address": addresses, "Port": ports}), max_size=4
        ),
    }
)
lb_cases = st.tuples(templates(LB_KEYS), lbconfigs)


def batch(
    size: int, *, strategy: st.SearchStrategy[tuple[str, Any]] = cases
) -> st.SearchStrategy[list[tuple[str, Any]]]:
    return st.lists(strategy, min_size=size, max_size=size)
