"""Go's predefined template functions (len, index, slice, eq/lt..., print*, html, js, urlquery)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from monitor.render.gotemplate import gofmt
from monitor.render.gotemplate.values import (
    NO_VALUE,
    GoSlice,
    GoStruct,
    InterfaceTyped,
    TypedInt,
    go_len_str,
    type_name,
)


class CallError(Exception):
    """A builtin failed; the executor wraps it as ``error calling NAME: ...``."""


# Parameter kinds: "value" is reflect.Value, "any" is interface{}, "string" is string.
@dataclass(frozen=True)
class Signature:
    fixed: tuple[str, ...]
    variadic: str | None
    impl: Callable[[list[object]], object]


def _iface(value: object) -> object:
    """indirectInterface: a nil interface becomes the invalid value."""
    return NO_VALUE if value is None else value


def truth(value: object) -> bool:
    value = _iface(value)
    ok, result = is_true(value)
    return result if ok else False


def is_true(value: object) -> tuple[bool, bool]:
    """(ok, truth) like Go's isTrue."""
    if value is NO_VALUE or value is None:
        return True, False
    if isinstance(value, bool):
        return True, value
    if isinstance(value, str | list | dict):
        return True, len(value) > 0
    if isinstance(value, int | float):
        return True, value != 0
    if isinstance(value, TypedInt):
        return True, value.value != 0
    if isinstance(value, GoSlice):
        return True, len(value.items) > 0
    if isinstance(value, GoStruct):
        return True, True
    return False, False


def _not(args: list[object]) -> object:
    return not truth(args[0])


def _len(args: list[object]) -> object:
    item = args[0]
    if item is None:
        raise CallError("len of nil pointer")
    if item is NO_VALUE:
        raise CallError("reflect: call of reflect.Value.Type on zero Value")
    if isinstance(item, str):
        return go_len_str(item)
    if isinstance(item, list | dict):
        return len(item)
    if isinstance(item, GoSlice):
        return len(item.items)
    raise CallError(f"len of type {type_name(item)}")


def _index_arg(index: object, cap: int) -> int:
    if isinstance(index, bool) or not isinstance(index, int | TypedInt):
        if index is NO_VALUE:
            raise CallError("cannot index slice/array with nil")
        raise CallError(f"cannot index slice/array with type {type_name(index)}")
    x = index.value if isinstance(index, TypedInt) else index
    if x < 0 or x > cap:
        raise CallError(f"index out of range: {x}")
    return x


def _index(args: list[object]) -> object:
    item = _iface(args[0])
    if item is NO_VALUE:
        raise CallError("index of untyped nil")
    for raw_index in args[1:]:
        index = _iface(raw_index)
        if item is None:
            raise CallError("index of nil pointer")
        if isinstance(item, str | list | GoSlice):
            if isinstance(item, str):
                data = item.encode("utf-8", "surrogateescape")
                x = _index_arg(index, len(data))
                if x >= len(data):
                    raise CallError("reflect: string index out of range")
                item = TypedInt(data[x], "uint8")
                continue
            items = item.items if isinstance(item, GoSlice) else item
            x = _index_arg(index, len(items))
            if x >= len(items):
                raise CallError("reflect: slice index out of range")
            item = items[x]
        elif isinstance(item, dict):
            if index is NO_VALUE:
                raise CallError("value is nil; should be of type string")
            if not isinstance(index, str):
                raise CallError(f"value has type {type_name(index)}; should be string")
            item = item.get(index)
        else:
            raise CallError(f"can't index item of type {type_name(item)}")
    return item


def _slice(args: list[object]) -> object:
    item = _iface(args[0])
    indexes = args[1:]
    if item is NO_VALUE:
        raise CallError("slice of untyped nil")
    if len(indexes) > 3:
        raise CallError(f"too many slice indexes: {len(indexes)}")
    if isinstance(item, str):
        if len(indexes) == 3:
            raise CallError("cannot 3-index slice a string")
        data = item.encode("utf-8", "surrogateescape")
        length = len(data)
    elif isinstance(item, list | GoSlice):
        length = len(item.items) if isinstance(item, GoSlice) else len(item)
    else:
        raise CallError(f"can't slice item of type {type_name(item)}")
    idx = [0, length, length]
    for i, index in enumerate(indexes):
        if isinstance(index, InterfaceTyped):
            raise CallError("cannot index slice/array with type interface {}")
        idx[i] = _index_arg(index, length)
    if idx[0] > idx[1]:
        raise CallError(f"invalid slice index: {idx[0]} > {idx[1]}")
    if len(indexes) == 3 and idx[1] > idx[2]:
        raise CallError(f"invalid slice index: {idx[1]} > {idx[2]}")
    if isinstance(item, str):
        return data[idx[0] : idx[1]].decode("utf-8", "surrogateescape")
    if isinstance(item, GoSlice):
        return GoSlice(item.elem_type, list(item.items[idx[0] : idx[1]]))
    return item[idx[0] : idx[1]]


# --- comparison ------------------------------------------------------------------------------

_BOOL, _INT, _UINT, _FLOAT, _STRING, _INVALID = range(6)


def _kind(value: object) -> int:
    if isinstance(value, bool):
        return _BOOL
    if isinstance(value, int):
        return _INT
    if isinstance(value, TypedInt):
        return _UINT if value.unsigned else _INT
    if isinstance(value, float):
        return _FLOAT
    if isinstance(value, str):
        return _STRING
    return _INVALID


def _num(value: object) -> int:
    return value.value if isinstance(value, TypedInt) else int(value)  # type: ignore[call-overload]


def _is_nil(value: object) -> bool:
    return value is NO_VALUE or (isinstance(value, GoSlice) and value.nil)


def _go_kind_name(value: object) -> str:
    if isinstance(value, list | GoSlice):
        return "slice"
    if isinstance(value, dict):
        return "map"
    if isinstance(value, GoStruct):
        return "struct"
    return "invalid"


def _comparable(value: object) -> bool:
    if isinstance(value, list | dict | GoSlice):
        return False
    if isinstance(value, GoStruct):
        return all(_comparable(v) for _, v in value.fields)
    return True


def _as_s(value: object) -> str:
    return gofmt.format_value(value, "s", gofmt.PLAIN, depth=0)


def _as_v(value: object) -> str:
    return gofmt.format_value(value, "v", gofmt.PLAIN, depth=0)


def _eq(args: list[object]) -> object:
    arg1 = _iface(args[0])
    if len(args) < 2:
        raise CallError("missing argument for comparison")
    k1 = _kind(arg1)
    for raw in args[1:]:
        arg = _iface(raw)
        k2 = _kind(arg)
        result = False
        if k1 != k2:
            if k1 == _INT and k2 == _UINT:
                result = _num(arg1) >= 0 and _num(arg1) == _num(arg)
            elif k1 == _UINT and k2 == _INT:
                result = _num(arg) >= 0 and _num(arg1) == _num(arg)
            elif arg1 is not NO_VALUE and arg is not NO_VALUE:
                raise CallError("incompatible types for comparison")
        elif k1 in (_INT, _UINT):
            result = _num(arg1) == _num(arg)
        elif k1 != _INVALID:
            result = arg1 == arg
        else:
            if _go_kind_name(arg1) != _go_kind_name(arg) and arg1 is not NO_VALUE and arg is not NO_VALUE:
                raise CallError(
                    f"non-comparable types {_as_s(arg1)}: {type_name(arg1)}, {type_name(arg)}: {_as_v(arg)}"
                )
            if _is_nil(arg1) or _is_nil(arg):
                result = _is_nil(arg) == _is_nil(arg1)
            else:
                if not _comparable(arg):
                    raise CallError(f"non-comparable type {_as_s(arg)}: {type_name(arg)}")
                result = arg1 == arg
        if result:
            return True
    return False


def _lt_values(arg1: object, arg2: object) -> bool:
    arg1 = _iface(arg1)
    k1 = _kind(arg1)
    if k1 == _INVALID:
        raise CallError("invalid type for comparison")
    arg2 = _iface(arg2)
    k2 = _kind(arg2)
    if k2 == _INVALID:
        raise CallError("invalid type for comparison")
    if k1 != k2:
        if k1 == _INT and k2 == _UINT:
            return _num(arg1) < 0 or _num(arg1) < _num(arg2)
        if k1 == _UINT and k2 == _INT:
            return _num(arg2) >= 0 and _num(arg1) < _num(arg2)
        raise CallError("incompatible types for comparison")
    if k1 == _BOOL:
        raise CallError("invalid type for comparison")
    if k1 in (_INT, _UINT):
        return _num(arg1) < _num(arg2)
    if k1 == _STRING:
        assert isinstance(arg1, str) and isinstance(arg2, str)
        return arg1.encode("utf-8", "surrogateescape") < arg2.encode("utf-8", "surrogateescape")
    assert isinstance(arg1, float) and isinstance(arg2, float)
    return arg1 < arg2


def _ne(args: list[object]) -> object:
    return not _eq(args)


def _lt(args: list[object]) -> object:
    return _lt_values(args[0], args[1])


def _le(args: list[object]) -> object:
    return _lt_values(args[0], args[1]) or bool(_eq(args))


def _gt(args: list[object]) -> object:
    return not (_lt_values(args[0], args[1]) or bool(_eq(args)))


def _ge(args: list[object]) -> object:
    return not _lt_values(args[0], args[1])


# --- printing and escaping -------------------------------------------------------------------


def _fmt_args(args: list[object]) -> list[object]:
    return [None if a is NO_VALUE else a for a in args]


def _print(args: list[object]) -> object:
    return gofmt.sprint(_fmt_args(args))


def _println(args: list[object]) -> object:
    return gofmt.sprintln(_fmt_args(args))


def _printf(args: list[object]) -> object:
    fmt = args[0]
    assert isinstance(fmt, str)
    return gofmt.sprintf(fmt, _fmt_args(args[1:]))


def _eval_args(args: list[object]) -> str:
    if len(args) == 1 and isinstance(args[0], str):
        return args[0]
    # printableValue turns a nil interface into the string "<no value>" before Sprint.
    return gofmt.sprint(["<no value>" if a is None or a is NO_VALUE else a for a in args])


_HTML = {"\0": "\ufffd", '"': "&#34;", "'": "&#39;", "&": "&amp;", "<": "&lt;", ">": "&gt;"}


def _html(args: list[object]) -> object:
    text = _eval_args(args)
    return "".join(_HTML.get(ch, ch) for ch in text)


_JS = {"\\": "\\\\", "'": "\\'", '"': '\\"', "<": "\\u003C", ">": "\\u003E", "&": "\\u0026", "=": "\\u003D"}


def _js(args: list[object]) -> object:
    text = _eval_args(args)
    out = []
    for ch in text:
        code = ord(ch)
        if ch in _JS:
            out.append(_JS[ch])
        elif code < 0x20:
            out.append(f"\\u00{code:02X}")
        elif code < 0x80 or ch.isprintable() or 0xDC80 <= code <= 0xDCFF:
            out.append(ch)
        else:
            out.append(f"\\u{code:04X}")
    return "".join(out)


_URL_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~")


def _urlquery(args: list[object]) -> object:
    data = _eval_args(args).encode("utf-8", "surrogateescape")
    out = []
    for byte in data:
        if byte in _URL_SAFE:
            out.append(chr(byte))
        elif byte == 0x20:
            out.append("+")
        else:
            out.append(f"%{byte:02X}")
    return "".join(out)


def _call(args: list[object]) -> object:
    fn = _iface(args[0])
    if fn is NO_VALUE:
        raise CallError("call of nil")
    raise CallError(f"non-function of type {type_name(fn)}")


def _unreachable(args: list[object]) -> object:  # pragma: no cover - and/or are special-cased
    raise AssertionError("and/or are evaluated by the executor")


BUILTIN_SIGNATURES: dict[str, Signature] = {
    "and": Signature(("value",), "value", _unreachable),
    "or": Signature(("value",), "value", _unreachable),
    "not": Signature(("value",), None, _not),
    "len": Signature(("value",), None, _len),
    "index": Signature(("value",), "value", _index),
    "slice": Signature(("value",), "value", _slice),
    "call": Signature(("value",), "value", _call),
    "eq": Signature(("value",), "value", _eq),
    "ne": Signature(("value", "value"), None, _ne),
    "lt": Signature(("value", "value"), None, _lt),
    "le": Signature(("value", "value"), None, _le),
    "gt": Signature(("value", "value"), None, _gt),
    "ge": Signature(("value", "value"), None, _ge),
    "print": Signature((), "any", _print),
    "println": Signature((), "any", _println),
    "printf": Signature(("string",), "any", _printf),
    "html": Signature((), "any", _html),
    "js": Signature((), "any", _js),
    "urlquery": Signature((), "any", _urlquery),
}
