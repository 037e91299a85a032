"""Hand-written differential corpus: every construct of Go text/template the issue lists."""

from __future__ import annotations

from typing import Any


def _nested(depth: int) -> Any:
    """``[[...[1]...]]``, ``depth`` lists deep."""
    data: Any = 1
    for _ in range(depth):
        data = [data]
    return data


# (template, data) pairs rendered in generic mode (JSON objects are Go maps).
GENERIC: list[tuple[str, Any]] = [
    ('{{range $i, $e := .}}{{$i}}={{printf "%05d|%-4s|%q|%v" $e "ab" "x\\"y" 1.5}}{{end}}', [1, 2]),
    ('{{.x}} {{.y}} {{.y.z}} {{print .x .y}} {{printf "%v %d %s" .x .y .x}}', {"x": "a"}),
    ("{{.n.z}}", {"n": None}),
    # A nil inside a container is written bare by fmt, whatever the width or verb (found by hypothesis).
    ('{{printf "%8v|%-6v|%8d|%s|%x" . .l . .l .}} {{printf "%8v" .a}}', {"a": None, "l": [None, 1]}),
    ('{{printf "%8d|%-8d|%+s|%08s|%.1d|%6t|%x" "s" "t" 5 true 2.5 1 nil}}', {}),
    ("{{index .l 0}} {{index .l 5}}", {"l": [1, None]}),
    ('{{len .}} {{len .a}} {{slice .a 1 2}} {{slice "héllo" 1 3}} {{index "abc" 1}}', {"a": [1, 2, 3]}),
    ("{{eq 1 1.0}}", {}),
    (
        '{{eq .a 3}} {{lt 1 2}} {{le "a" "b"}} {{ge 2.5 1.5}} {{ne .a .b}} {{eq .a .b .c 3}}',
        {"a": 3, "b": 3.5, "c": "x"},
    ),
    ('{{and 1 0 (index .x 3)}} {{or 0 "" .a}} {{not .a}} {{and}}', {"a": [1]}),
    (
        "{{- /* c */ -}} x {{- 3 -}} y {{$x := 1}}{{$x = 2}}{{$x}}{{with .a}}{{"
        ".}}{{else}}no{{end}}{{with .b}}{{.}}{{else}}no{{end}}",
        {"a": 5},
    ),
    (
        '{{define "x"}}[{{.}}]{{end}}{{template "x" .a}}{{block "y" 3}}<{{.}}>{{end}}{{template "x"}}',
        {"a": 5},
    ),
    (
        "{{range .}}{{if eq . 2}}{{continue}}{{end}}{{if eq . 4}}{{break}}{{end}}{{.}}{{else}}empty{{end}}",
        [1, 2, 3, 4, 5],
    ),
    (
        "{{range .}}x{{else}}empty{{end}}{{range .m}}{{.}}{{end}}{{range $k, $v := .m}}{{$k}}{{$v}}{{end}}",
        {"m": {"b": 1, "a": 2}},
    ),
    (
        '{{html "<a href=\'x\'>&\\"</a>"}} {{js "a\'b\\"c<>&=\\u00e9\\n"}} {{urlquery '
        '"a b&c=d/é"}} {{html .x}} {{print nil}}',
        {},
    ),
    ('{{println 1 2 "a" "b" 3}}{{print 1 2 "a" "b" 3 .x 4.5 true}}', {"x": [1, "a"]}),
    (
        '{{printf "%5.2f|%e|%g|%G|%x|%X|%o|%b|%c|%U|%t|%8.3s|%-8q|%+d|% d|%#x|%'
        '#o" 3.14159 1234.5678 0.000012345 1e21 255 255 8 5 65 65 true "abcdef"'
        ' "hi" 5 5 255 8}}',
        {},
    ),
    (
        '{{printf "%d %s" 1}} {{printf "%d" 1 2 "x"}} {{printf "%z" 1}} {{print'
        'f "%!"}} {{printf "%"}} {{printf "%d" "s"}} {{printf "%s" 5}} {{printf'
        ' "%T %T %T %T %T" 1 1.5 "s" true .m}}',
        {"m": {"a": [1]}},
    ),
    ('{{printf "%v %+v %d %s" .m .m .l .l}}', {"m": {"a": [1, None], "b": {"c": 1.5}}, "l": [1, 2]}),
    (
        "{{1e6}} {{1e21}} {{123456.7}} {{1234567.0}} {{0.0001}} {{0.00001}} {{-"
        "0.0}} {{1.0}} {{100}} {{0x1F}} {{0o17}} {{017}} {{1_000}} {{'a'}} {{'\\"
        "n'}} {{-5}} {{+5}} {{.5}} {{0x1p4}}",
        {},
    ),
    ("{{.a.b}}", {"a": 1}),
    ("{{nil}}", {}),
    ("{{.x 1}}", {"x": 1}),
    ('{{template "nope"}}', {}),
    ("{{if}}{{end}}", {}),
    ("{{range 5}}{{end}}", {}),
    ("{{$x}}", {}),
    ('{{"a" | printf "%s-%s" "b"}} {{3 | eq 3}} {{. | len}}', [1]),
    ("{{ .a | index . }}", {"a": "k"}),
    ('{{(1)}} {{(.a).b}} {{(index . "a").b}}', {"a": {"b": 7}}),
    ("{{1 | not}}", {}),
    ("{{with $x := .a}}{{$x}}{{end}}{{if $y := 0}}a{{else if $z := 1}}{{$z}}{{end}}", {"a": 2}),
    ('{{printf "%05s|%-05d|%05.1f|%+.2e|%x|% x|%X" "ab" 3 -2.5 12345.678 "hi" "hi" "hi"}}', {}),
    ('{{printf "%v" .}}', {"a": 1.5, "b": 10000000, "c": 1e100, "d": -2.5e-10, "e": 3.0}),
    ("{{len 3}}", {}),
    ("{{index 3 1}}", {}),
    ('{{lt 1 "a"}}', {}),
    ("{{lt true false}}", {}),
    ("{{eq .l .l}}", {"l": [1]}),
    ("{{eq .m nil}} {{eq .missing nil}} {{eq nil nil}}", {"m": {}}),
    ('{{printf "%q %q %q" "\\x00\\u00e9\\U0001F600" 0x1F600 \'x\'}} {{printf "%+q %#q" "é" "a`b"}}', {}),
    (
        '{{html "<a href=\'x\'>&\\"</a>"}} {{js "a\'b\\"c<>&=é\\t"}} {{urlquery "a b&'
        'c=d/é"}} {{html .x}} {{print nil}} {{js 1 "a" 2 nil}}',
        {},
    ),
    (
        "{{1e6}} {{1e21}} {{123456.7}} {{1234567.0}} {{0.0001}} {{0.00001}} {{-"
        "0.0}} {{1.0}} {{100}} {{0x1F}} {{0o17}} {{017}} {{1_000}} {{'a'}} {{'\\"
        "t'}} {{-5}} {{+5}} {{.5}} {{0x1p4}} {{1e-7}} {{5e20}} {{1.5e300}}",
        {},
    ),
    (
        '{{printf "%v %.3v %10.4g %-10.2f| %08.3f %+v %x" 1.0 3.14159 123.456 2.5 -3.14159 .s .n}}',
        {"s": {"a": 1}, "n": -255},
    ),
    ('{{printf "%d" 18446744073709551615}}', {}),
    ("{{18446744073709551615}}", {}),
    ("{{99999999999999999999}}", {}),
    ('{{printf "%c %c %q" 0x110000 -1 -1}}', {}),
    ('{{index .m "a"}} {{index .m "zz"}} {{index .m 1}}', {"m": {"a": 1}}),
    ("{{slice .l 1}} {{slice .l}} {{slice .l 0 3}} {{slice .l 2 1}}", {"l": [1, 2, 3]}),
    ("{{slice .l 0 1 2}}", {"l": [1, 2, 3]}),
    ('{{slice "abc" 0 1 2}}', {}),
    # slice does not unwrap its indexes: a value read from a map or []interface {} keeps the type interface {}.
    ('{{slice "abc" .a}}', {"a": 1}),
    ('{{slice "abc" .n}}', {"n": None}),
    ('{{slice "abc" .missing}}', {}),
    ('{{slice "abc" (.a)}} {{with .a}}{{slice "abc" .}}{{end}} {{$x := .a}}{{slice "abc" $x}}', {"a": 1}),
    ('{{slice "abc" (index .l 0)}} {{slice "" .}}', {"l": [1]}),
    ('{{range .l}}{{slice "abc" .}}{{end}}', {"l": [1]}),
    ('{{range $i, $e := .l}}{{slice "abc" $i}}{{slice "abc" $e}}{{end}}', {"l": [1]}),
    ('{{range $k, $v := .m}}{{slice $k 1}}{{$v = 1}}{{slice $k $v}}{{end}}', {"m": {"ab": 2}}),
    ('{{range .l}}{{with 1}}{{slice "abc" .}}{{end}}{{slice "abc" .}}{{end}}', {"l": [2]}),
    ('{{range .l}}{{slice "abc" .x}}{{end}}', {"l": [{"x": 1}]}),
    ('{{slice "abc" (.l).x}}', {"l": {"x": 1}}),
    ('{{slice "" .}}', {}),
    ("{{$}} {{$.a}} {{range .l}}{{$.a}}{{end}}", {"a": 1, "l": [1, 2]}),
    ("{{.a.b.c}}", {}),
    (
        '{{print .a .b}} {{print "a" 1 2 "b"}} {{print 1.5 2.5}} {{print true false}} {{print nil nil}}',
        {"a": None, "b": 1},
    ),
    ('{{if and .a .b}}y{{else}}n{{end}} {{or .z "def"}} {{and 1 .missing.x}}', {"a": 1, "b": 0}),
    (
        "{{range $i, $e := .m}}{{$i}}:{{$e}},{{end}} {{range $e := .l}}{{$e}}{{end}}",
        {"m": {"b": [1], "a": "x", "c": None}, "l": ["p", "q"]},
    ),
    ("{{with .x}}{{.}}{{else with .y}}{{.}}{{end}}", {"y": 1}),
    ('{{printf "%s" nil}} {{printf "%d" nil}} {{printf "%v" nil}} {{printf "%T" nil}}', {}),
    ('{{printf "%6.2v|%-6v|%06v" 3.14159 "ab" 42}}', {}),
    ('{{printf "%s %v %d" .b .b .b}} {{.b}}', {"b": True}),
    (
        '{{eq "a" "a" "b"}} {{eq 1 2 3 1}} {{ne "a" "b"}} {{gt 2 1}} {{ge 1 1}} {{le 1.5 1.5}} {{lt "b" "a"}}',
        {},
    ),
    ("{{eq .a .a}}", {"a": {"x": 1}}),
    ('{{printf "%v|%s|%d" .l .l .l}}', {"l": [[1, "a"], {"k": 1.5}, None, True]}),
    ('{{printf "%x %X %x %x %.2x %.0x %x %x" 1.5 -0.1 0.0 1e300 3.14159 1.5 5e-324 1.0}}', {}),
]

GENERIC += [
    # trim markers and comments
    ("a  {{- 1 -}}  b\n\n{{- 2}}\n{{3 -}}\n\nc", {}),
    ("a {{- /* comment */ -}} b {{/* c2 */}} c", {}),
    ("{{/* unclosed comment }}", {}),
    ("{{/* a */ 1}}", {}),
    ("{{-3}} {{- -3}} {{3 - }}", {}),
    ("x{{-\n.a\n-}}\ny", {"a": 1}),
    ("{{.a}", {"a": 1}),
    ("{{.a", {"a": 1}),
    ("{{(.a}}", {"a": 1}),
    ("{{.a)}}", {"a": 1}),
    ("{{end}}", {}),
    ("{{else}}", {}),
    ("{{if 1}}x", {}),
    ("{{range .}}{{end}}{{break}}", [1]),
    ("{{if 1}}{{continue}}{{end}}", {}),
    ("{{nope 1}}", {}),
    ("{{.a.B.c}} {{.A}}", {"a": {"B": {"c": "deep"}}, "A": "up"}),
    ("{{$x := 1}}{{if true}}{{$x := 2}}{{$x}}{{end}}{{$x}}", {}),
    ("{{$x := 1}}{{if true}}{{$x = 2}}{{$x}}{{end}}{{$x}}", {}),
    ("{{range $i, $e := .}}{{$i}}{{end}}{{$i}}", [1]),
    ("{{range $i, $e, $f := .}}{{end}}", [1]),
    ("{{with $x := 1}}{{$x}}{{end}}", {}),
    ("{{if .a}}A{{else if .b}}B{{else if .c}}C{{else}}D{{end}}", {"c": [0]}),
    ("{{if .a}}A{{else if .b}}B{{else}}D{{end}}", {"a": "", "b": 0.0}),
    ("{{with .a}}{{.b}}{{end}}{{with .z}}no{{else}}{{.a.b}}{{end}}", {"a": {"b": "in"}}),
    ("{{range .}}{{range .}}{{if eq . 2}}{{break}}{{end}}{{.}}{{end}};{{end}}", [[1, 2, 3], [4, 2]]),
    ("{{range .}}{{else}}none{{end}}|{{range .x}}{{else}}nil-range{{end}}", []),
    ("{{range $k, $v := .}}{{$k}}={{$v}};{{end}}", {"b": 2, "a": 1, "é": 3, "B": 4, "": 5}),
    ('{{define "T"}}T({{.}}){{end}}{{template "T" 1}}{{template "T" "s"}}{{template "T" .}}', [1]),
    ('{{define "a"}}{{template "b" .}}{{end}}{{define "b"}}b{{.}}{{end}}{{template "a" 2}}', {}),
    ('{{block "B" .}}default {{.x}}{{end}}', {"x": 1}),
    ('{{define "t"}}x{{end}}{{define "t"}}y{{end}}', {}),
    ('{{define "t"}}defined{{end}}   ', {}),
    ('{{define "D"}}{{$}}{{end}}{{$x := 5}}{{template "D" $x}}', {}),
    ('{{template "x" 1 2}}', {}),
    # literals
    (
        "{{\"a\\tb\\x41\\u00e9\\101\"}} {{`raw\\n`}} {{'\\''}} {{'\\x41'}} {{'\\u00e9'}} {{true}} {{false}}",
        {},
    ),
    ('{{"\\\'"}}', {}),
    ("{{'ab'}}", {}),
    ("{{''}}", {}),
    ("{{1.5e3}} {{-1.5}} {{0b101}} {{0B11}} {{0X_FF}} {{1__0}}", {}),
    ("{{3.}} {{0.}} {{00}} {{08}}", {}),
    ("{{3.}} {{0.}} {{00}} {{07}} {{08.5}} {{1_0.5}} {{0_7}} {{0x_1}}", {}),
    ("{{1_}}", {}),
    ("{{1__0}}", {}),
    ("{{0x}}", {}),
    ("{{9223372036854775807}} {{-9223372036854775808}} {{9223372036854775808}}", {}),
    ("{{1e400}}", {}),
    ("{{nil | print}}", {}),
    ('{{print 1 | printf "%s|%v" 2}}', {}),
    ('{{.a | printf "%d"}}', {"a": 5}),
    ('{{"x" | printf}}', {}),
    ("{{5 | printf}}", {}),
    ("{{printf .f 1}}", {"f": "%05d"}),
    ("{{printf .f 1}}", {"f": 5}),
    ("{{printf nil}}", {}),
    ("{{printf}}", {}),
    ("{{len}}", {}),
    ("{{not 1 2}}", {}),
    ("{{eq 1}}", {}),
    ("{{1 2}}", {}),
    ("{{. 2}}", {}),
    ("{{$ 2}}", {}),
    ("{{(1) 2}}", {}),
    ("{{. | 1}}", {}),
    ("{{nil.a}}", {}),
    ("{{(nil).a}}", {}),
    ("{{(.a).b.c}}", {"a": {"b": {"c": 3}}}),
    ("{{(index . 0).x}}", [{"x": "idx"}]),
    ('{{len .s}} {{index .s 1}} {{printf "%c" (index .s 0)}} {{slice .s 1}}', {"s": "héllo"}),
    ('{{index . 0 1 "k"}} {{index .}}', [[0, {"k": "deep"}]]),
    ("{{index . 0 1 2}}", [[0, None]]),
    ("{{index nil 1}}", {}),
    ("{{index . -1}}", [1]),
    ("{{index . 1.0}}", [1, 2]),
    ("{{slice . 1 2 5}}", [1, 2, 3]),
    ("{{slice 1 1}}", {}),
    ("{{slice . 0 1 2 3}}", [1, 2, 3]),
    ('{{and 1 2}} {{and 0 (len 3)}} {{or 1 (len 3)}} {{or 0 ""}} {{and .a .b}}', {"a": 1}),
    ("{{and (len 3) 1}}", {}),
    ('{{not 0}} {{not ""}} {{not .}} {{not nil}} {{not .l}} {{not .m}}', {"l": [], "m": {}}),
    ("{{if .l}}l{{end}}{{if .m}}m{{end}}{{if 0.0}}f{{end}}{{if nil}}n{{end}}", {"l": [], "m": {}}),
    ('{{eq 1 1}} {{eq "a" "b"}} {{eq true true}} {{eq 1.5 1.5}} {{eq .x nil}} {{eq . .}}', {"x": None}),
    ("{{eq .a .b}}", {"a": [1], "b": {"c": 1}}),
    ('{{lt .a .b}} {{lt "Z" "a"}} {{gt 1.5 -2.0}} {{le 3 3}} {{ge "a" "a"}}', {"a": -1, "b": 5}),
    ("{{lt nil 1}}", {}),
    ("{{lt 1}}", {}),
    ("{{ne 1 2 3}}", {}),
    ("{{html .}} {{js .}} {{urlquery .}}", "<script>alert('x&y')</script> é\u2028\x01"),
    ('{{html 1 2}} {{js 1 2.5}} {{urlquery "a" "b" 3}} {{html .x .y}}', {"y": 1}),
    ('{{print}}|{{println}}|{{print ""}}|{{println "" ""}}', {}),
    ("{{print .}}", [1, "a", None, 2.5, {"k": [True]}]),
    ("{{call .f}}", {"f": 1}),
    ("{{call nil}}", {}),
    ('{{printf "%-5d|%5s|%.1f|%3c|%-4t|%08.3e|%+.0f|% 05d" 42 "é" 2.25 65 true 1234.5 2.5 -7}}', {}),
    ('{{printf "%[2]d %[1]s" "a" 1}}', {}),
    ('{{printf "%*d|%-*d|%.*f" 5 1 4 2 2 3.14159}}', {}),
    ('{{printf "%d%%|%5%|%" 50}}', {}),
    ('{{printf "%v %v" .a .b}}', {"a": 1e21, "b": 123456789012345680000.0}),
    ('{{printf "%.3g|%.10g|%g|%G|%e" 1234567.0 1.0 1e-5 1e-7 0.0}}', {}),
    ('{{printf "%s" .}}', {"a": "x", "b": [1, "y"], "c": None}),
    ('{{printf "%q" .}}', ["a", 1, None]),
    ('{{printf "%x|%X|% X|%#x" "héllo" "hi" "hi" "hi"}}', {}),
    ('{{printf "%o|%#o|%O|%b|%#b" 8 8 8 5 5}}', {}),
    ('{{printf "%t|%v|%5t" false true true}}', {}),
    ('{{printf "%d|%x" .a .a}}', {"a": [255, 16]}),
    ('{{printf "%08.3d|%+08d|%-08d|%.0d|%5.0d" 5 5 5 0 0}}', {}),
    ('{{printf "%q|%+q|%#q" "\\x7f\\u2028\\\\" "\\u00ff" "a\\tb"}}', {}),
    ('{{printf "%c|%q|%U|%#U" 233 233 233 233}}', {}),
    ("{{printf \"%v\" 'x'}} {{printf \"%T\" 'x'}}", {}),
]

GENERIC += [
    # template recursion: unbounded (Go's depth limit), and bounded but 80 levels deep
    ('{{define "a"}}{{template "a" .}}{{end}}{{template "a" 1}}', {}),
    (
        '{{define "d"}}{{if gt (len .) 0}}[{{index . 0}}{{template "d" (slice . 1)}}]{{end}}{{end}}'
        '{{template "d" .}}',
        list(range(80)),
    ),
]

GENERIC += [
    # fmt's caps: a width or precision is read digit by digit while it is at most 1e6 (so up to 10,000,009
    # gets through), past that the rest of the format is eaten (%!(NOVERB)); * arguments beyond 1e6 are bad.
    ('{{printf "%10000009d|%300000000d|" 1 2}}', {}),
    ('{{printf "%.1000001f|%.300000000s|" 1.5 "abc"}}', {}),
    ('{{printf "%-10000010x%v" 1 2}}', {}),
    ('{{printf "%*d|%*d|%.*f|%.*s|" 300000000 1 -300000000 2 300000000 1.5 1000001 "abc"}}', {}),
    ('{{printf "%*d|%-*d|" 1000000 1 -1000000 2 | len}}', {}),
    ('{{printf "%[300000000]d|%[1]10000010d" 1}}', {}),
    # a verb-less tail: "%." takes no precision when nothing follows it
    ('{{printf "%." 1}}|{{printf "%5." 1}}|{{printf "%.5" 1}}', {}),
    # nesting at the engine's caps (100 levels) renders like Go
    ("{{if 1}}" * 100 + "x" + "{{end}}" * 100, {}),
    ("{{with .}}" * 50 + "{{range .}}" * 50 + "{{.}}" + "{{end}}" * 100, _nested(50)),
    ("{{" + "(" * 99 + "1" + ")" * 99 + "}}", {}),
    ("{{print " + "(print " * 99 + "1" + ")" * 99 + "}}", {}),
    ("{{if 0}}" + "{{else if 0}}" * 99 + "{{else}}last{{end}}", {}),
]

GENERIC += [
    # %#v: Go-syntax representation
    ('{{printf "%#v|%#v|%#v|%#v|%#v|%#v|%#v" 1 -2 "a\\"b" 1.0 1e6 true nil}}', {}),
    ('{{printf "%#v" .}}', {"a": [1, "x", None, 2.5, {"k": []}], "b": {}, "c": None}),
    ('{{printf "%#v" .}}', [None]),
    ('{{printf "%#v %#v" (index "abc" 0) (slice "abc" 1)}}', {}),
    ('{{printf "%#5v|%-#6v|%#05v" 1 "a" 2}}', {}),
    ('{{printf "%#x %#X %#o %#q %#b" "hi" 255 8 "a`b" 5}}', {}),
]

GENERIC += [
    # lexing corners, nesting, scoping, template definition order and redefinition
    ('{{"}}"}} {{`{{x}}`}} {{.héllo}} {{$é := 1}}{{$é}} {{.a_b}} {{._x}}', {"héllo": "u", "a_b": 1, "_x": 2}),
    ("{{.a-b}}", {}),
    ("{{.a!}}", {}),
    ("{{ .a\t}}{{\t.a }}{{.a\n}}", {"a": 1}),
    ("{{- .a -}}", {"a": 1}),
    ("{{-.a}}", {"a": 1}),
    ("{{.a-}}", {"a": 1}),
    ("{{ -}}", {}),
    ("{{ - }}", {}),
    ('a {{- "" -}}\n\tb', {}),
    ("{{.a.b.c.d}}", {"a": {"b": {"c": {"d": "deep"}}}}),
    ("{{with .a}}{{with .b}}{{$.x}}{{.}}{{end}}{{end}}", {"a": {"b": 1}, "x": "root"}),
    ("{{range $i, $e := .}}{{range $j, $f := $e}}{{$i}}{{$j}}{{$f}}{{end}}{{end}}", [[1, 2], [3]]),
    ("{{$x := 0}}{{range .}}{{$x = .}}{{end}}{{$x}}", [1, 2, 3]),
    ("{{range .}}{{$y := .}}{{end}}{{$y}}", [1]),
    ('{{template "a"}}{{define "a"}}A{{end}}{{define "b"}}B{{end}}{{template "b"}}', {}),
    ('{{define "x"}}{{end}}{{define "x"}}X{{end}}{{template "x"}}', {}),
    ('{{block "x" .}}1{{end}}{{define "x"}}2{{end}}', {}),
    ('{{define "t"}}override{{end}}', {}),
    ('{{define "t"}}override{{end}} main body', {}),
]

# Data sets for the LBConfig (reference struct) mode; templates come from templates/ and below.
ODD_HOST = "odd<&>'\"host"

LBCONFIGS: dict[str, dict[str, Any]] = {
    "ipv4-three": {
        "ApiPort": 6443,
        "LbPort": 9445,
        "StatPort": 29445,
        "FrontendAddr": "",
        "Backends": [
            {"Host": "master-0", "Address": "192.0.2.10", "Port": 6443},
            {"Host": "master-1", "Address": "192.0.2.11", "Port": 6443},
            {"Host": "master-2", "Address": "192.0.2.12", "Port": 6443},
        ],
    },
    "ipv6-two": {
        "ApiPort": 6443,
        "LbPort": 9445,
        "StatPort": 29445,
        "FrontendAddr": "::",
        "Backends": [
            {"Host": "m0.example.com", "Address": "2001:db8::10", "Port": 6443},
            {"Host": "m1.example.com", "Address": "2001:db8::11", "Port": 6443},
        ],
    },
    "one": {
        "ApiPort": 6443,
        "LbPort": 9445,
        "StatPort": 29445,
        "FrontendAddr": "",
        "Backends": [{"Host": "dummy", "Address": "0.0.0.0", "Port": 6443}],
    },
    "none": {"ApiPort": 6443, "LbPort": 9445, "StatPort": 29445, "FrontendAddr": "", "Backends": []},
    "odd-names": {
        "ApiPort": 0,
        "LbPort": 65535,
        "StatPort": 1,
        "FrontendAddr": "::",
        "Backends": [
            {"Host": ODD_HOST, "Address": "::1", "Port": 0},
            {"Host": "é ü", "Address": "127.0.0.1", "Port": 65535},
        ],
    },
}

LBCONFIG_TEMPLATES: list[str] = [
    "{{.LBConfig.ApiPort}} {{.LBConfig.LbPort}} {{.LBConfig.StatPort}} [{{.LBConfig.FrontendAddr}}]",
    '{{printf "%v|%+v|%T|%d|%x|%05d" .LBConfig.ApiPort .LBConfig.ApiPort .LBConfig.ApiPort'
    " .LBConfig.LbPort .LBConfig.StatPort .LBConfig.ApiPort}}",
    '{{printf "%v" .}}|{{printf "%+v" .LBConfig}}|{{printf "%T %T" . .LBConfig.Backends}}',
    '{{printf "%#v" .}}|{{printf "%#v" .LBConfig.ApiPort}}|{{printf "%#v" (index .LBConfig.Backends 0)}}',
    "{{.}}",
    "{{range $i, $b := .LBConfig.Backends}}{{$i}} {{$b.Host}} {{$b.Address}}:{{$b.Port}} {{$b}}\n{{end}}",
    '{{range .LBConfig.Backends}}{{html .Host}} {{js .Host}} {{urlquery .Host}} {{printf "%q" .Host}}\n'
    "{{else}}no backends{{end}}",
    "{{.LBConfig.Nope}}",
    "{{.LBConfig.backends}}",
    "{{.Nope.X}}",
    "{{.LBConfig.ApiPort.X}}",
    "{{eq .LBConfig.ApiPort 6443}} {{eq 6443 .LBConfig.ApiPort}} {{lt .LBConfig.ApiPort 7000}}"
    " {{gt .LBConfig.LbPort .LBConfig.ApiPort}} {{ne .LBConfig.ApiPort -1}} {{le -1 .LBConfig.ApiPort}}",
    "{{eq .LBConfig.ApiPort 6443.0}}",
    '{{eq .LBConfig.ApiPort "6443"}}',
    "{{len .LBConfig.Backends}} {{if .LBConfig.Backends}}some{{else}}none{{end}}"
    " {{eq .LBConfig.Backends nil}}",
    "{{with index .LBConfig.Backends 0}}{{.Host}}{{end}}",
    "{{with .LBConfig.Backends}}{{(index . 0).Port}} {{slice . 1}}{{end}}",
    "{{range .LBConfig.Backends}}{{if eq .Port $.LBConfig.ApiPort}}same{{else}}diff{{end}} {{end}}",
    "{{range .LBConfig.Backends}}{{eq . .}}{{end}}",
    "{{eq .LBConfig .LBConfig}}",
    "{{.LBConfig.Backends.Host}}",
    "{{.LBConfig.ApiPort 1}}",
    "{{range .LBConfig}}{{end}}",
    "{{if .LBConfig}}struct is true{{end}} {{not .LBConfig}}",
    "{{len .LBConfig.FrontendAddr}} {{index .LBConfig.FrontendAddr 0}}",
    '{{printf "%s" .LBConfig.ApiPort}} {{printf "%d" .LBConfig.FrontendAddr}}',
    '{{print .LBConfig.ApiPort .LBConfig.LbPort "x" .LBConfig.FrontendAddr}}',
    "bind {{if .LBConfig.FrontendAddr}}[{{.LBConfig.FrontendAddr}}]{{else}}*{{end}}:{{.LBConfig.LbPort}}",
]
