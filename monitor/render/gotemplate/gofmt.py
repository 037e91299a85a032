"""Go's fmt package for template values: Sprint, Sprintln and Sprintf with Go's verbs, flags and spacing."""

from __future__ import annotations

import math

from monitor.render.gotemplate.values import NO_VALUE, GoSlice, GoStruct, TypedInt, type_name

_SURROGATE = "surrogateescape"


class _Spec:
    """Flags, width and precision of one verb."""

    __slots__ = ("minus", "plus", "plus_v", "prec", "sharp", "sharp_v", "space", "wid", "zero")

    def __init__(self) -> None:
        self.minus = False
        self.plus = False
        self.plus_v = False
        self.sharp = False
        self.sharp_v = False
        self.space = False
        self.zero = False
        self.wid = -1
        self.prec = -1


PLAIN = _Spec()


def _pad(spec: _Spec, text: str, *, zero: bool | None = None) -> str:
    if spec.wid < 0:
        return text
    use_zero = spec.zero if zero is None else zero
    # Go pads by rune count, not bytes.
    missing = spec.wid - len(text)
    if missing <= 0:
        return text
    if spec.minus:
        return text + " " * missing
    return ("0" if use_zero else " ") * missing + text


def _is_int(value: object) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or isinstance(value, TypedInt)


def _int_parts(value: object) -> tuple[int, bool]:
    """Integer value and whether its Go type is unsigned."""
    if isinstance(value, TypedInt):
        return value.value, value.unsigned
    assert isinstance(value, int)
    return value, False


def _quote(text: str, *, ascii_only: bool = False) -> str:
    out = ['"']
    raw = text.encode("utf-8", _SURROGATE)
    i = 0
    while i < len(raw):
        byte = raw[i]
        if byte < 0x80:
            ch = chr(byte)
            width = 1
        else:
            # Decode one UTF-8 sequence; invalid bytes become \xNN like strconv.Quote.
            width = 0
            ch = ""
            for size in (2, 3, 4):
                try:
                    ch = raw[i : i + size].decode("utf-8")
                except UnicodeDecodeError:
                    continue
                if len(ch) == 1:
                    width = size
                    break
            if width == 0:
                out.append(f"\\x{byte:02x}")
                i += 1
                continue
        i += width
        out.append(_escape_rune(ch, quote='"', ascii_only=ascii_only))
    out.append('"')
    return "".join(out)


_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


def _escape_rune(ch: str, *, quote: str, ascii_only: bool) -> str:
    if ch == quote or ch == "\\":
        return "\\" + ch
    code = ord(ch)
    if ascii_only:
        if code < 0x80 and ch.isprintable():
            return ch
    elif ch.isprintable():
        return ch
    if ch in _ESCAPES:
        return _ESCAPES[ch]
    if code < 0x20 or code == 0x7F:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _quote_rune(code: int, *, ascii_only: bool) -> str:
    if not 0 <= code <= 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        code = 0xFFFD
    return "'" + _escape_rune(chr(code), quote="'", ascii_only=ascii_only) + "'"


def _can_backquote(text: str) -> bool:
    return all(
        ch == "\t" or (ch != "`" and ord(ch) >= 0x20 and ch != "\x7f" and ch != "\ufeff") for ch in text
    )


def _fmt_integer(spec: _Spec, value: int, verb: str, *, unsigned: bool) -> str:
    neg = value < 0
    magnitude = -value if neg else value
    if verb in ("d", "v"):
        if verb == "v" and spec.sharp and unsigned:
            digits, base = f"{magnitude:x}", 16
        else:
            digits, base = str(magnitude), 10
    elif verb == "b":
        digits, base = f"{magnitude:b}", 2
    elif verb in ("o", "O"):
        digits, base = f"{magnitude:o}", 8
    elif verb == "x":
        digits, base = f"{magnitude:x}", 16
    elif verb == "X":
        digits, base = f"{magnitude:X}", 16
    else:  # pragma: no cover - callers only pass integer verbs
        raise AssertionError(verb)
    prec = -1
    if spec.prec >= 0:
        prec = spec.prec
        if prec == 0 and value == 0:
            return _pad(spec, "", zero=False)
    elif spec.zero and spec.wid >= 0 and not spec.minus:
        prec = spec.wid
        if neg or spec.plus or spec.space:
            prec -= 1
    if prec > len(digits):
        digits = "0" * (prec - len(digits)) + digits
    if spec.sharp:
        if base == 8 and not digits.startswith("0"):
            digits = "0" + digits
        elif base == 16:
            digits = ("0X" if verb == "X" else "0x") + digits
        elif base == 2:
            digits = "0b" + digits
    if verb == "O":
        digits = "0o" + digits
    if neg:
        digits = "-" + digits
    elif spec.plus:
        digits = "+" + digits
    elif spec.space:
        digits = " " + digits
    return _pad(spec, digits, zero=False)


def _shortest(value: float) -> tuple[str, int]:
    """Shortest round-tripping decimal digits of abs(value) and the decimal point position."""
    text = repr(abs(value))
    mantissa, _, exp_text = text.partition("e")
    exponent = int(exp_text) if exp_text else 0
    whole, _, frac = mantissa.partition(".")
    if frac == "0":
        frac = ""
    digits = whole + frac
    point = len(whole) + exponent
    stripped = digits.lstrip("0")
    point -= len(digits) - len(stripped)
    digits = stripped.rstrip("0")
    if not digits:
        return "0", 1
    return digits, point


def _exp_suffix(letter: str, exponent: int) -> str:
    sign = "-" if exponent < 0 else "+"
    return f"{letter}{sign}{abs(exponent):02d}"


def _format_g_shortest(value: float, upper: bool) -> str:
    # strconv.FormatFloat(v, 'g', -1, 64): shortest digits, %e form when exp < -4 || exp >= 6.
    digits, point = _shortest(value)
    exponent = point - 1
    if exponent < -4 or exponent >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return mantissa + _exp_suffix("E" if upper else "e", exponent)
    if point <= 0:
        return "0." + "0" * (-point) + digits
    if point >= len(digits):
        return digits + "0" * (point - len(digits))
    return digits[:point] + "." + digits[point:]


def _hex_float(value: float, prec: int, *, upper: bool) -> str:
    """strconv's 'x' format: 0x1.8p+00 (mantissa normalised to a leading 1)."""
    if value == 0:
        mant, exp = 0, 0
    else:
        fraction, exp2 = math.frexp(value)
        mant = int(fraction * (1 << 53))  # 53 significant bits, top bit set
        exp = exp2 - 1
    if prec >= 0 and mant:
        shift = 52 - 4 * prec
        if shift > 0:
            half = 1 << (shift - 1)
            low = mant & ((1 << shift) - 1)
            mant >>= shift
            if low > half or (low == half and mant & 1):
                mant += 1
            mant <<= shift
            if mant >> 53:
                mant >>= 1
                exp += 1
    frac = mant & ((1 << 52) - 1)
    lead = "1" if mant else "0"
    digits = f"{frac:013x}"
    digits = digits.rstrip("0") if prec < 0 else (digits + "0" * prec)[:prec]
    text = (
        "0x" + lead + ("." + digits if digits else "") + "p" + ("-" if exp < 0 else "+") + f"{abs(exp):02d}"
    )
    return text.upper() if upper else text


def _fmt_float(spec: _Spec, value: float, verb: str) -> str:
    if math.isinf(value) or math.isnan(value):
        if math.isnan(value):
            text = "+NaN" if spec.plus else (" NaN" if spec.space else "NaN")
        else:
            text = ("-" if value < 0 else ("+" if spec.plus else (" " if spec.space else ""))) + "Inf"
        return _pad(spec, text, zero=False)
    prec = spec.prec
    upper = verb in ("G", "E", "F")
    if verb in ("v", "g", "G"):
        shortest = prec < 0
        body = (
            _format_g_shortest(value, upper)
            if shortest
            else format(abs(value), f".{prec}{'G' if upper else 'g'}")
        )
    elif verb in ("e", "E"):
        body = format(abs(value), f".{6 if prec < 0 else prec}{verb}")
    elif verb in ("f", "F"):
        body = format(abs(value), f".{6 if prec < 0 else prec}f")
    elif verb in ("x", "X"):
        body = _hex_float(abs(value), prec, upper=verb == "X")
    else:  # pragma: no cover - callers only pass float verbs we support
        raise AssertionError(verb)
    negative = math.copysign(1.0, value) < 0
    sign = "-" if negative else ("+" if spec.plus else (" " if spec.space else ""))
    if spec.zero and spec.wid >= 0 and not spec.minus and spec.wid > len(sign) + len(body):
        return sign + "0" * (spec.wid - len(sign) - len(body)) + body
    return _pad(spec, sign + body, zero=False)


def _fmt_string(spec: _Spec, value: str, verb: str) -> str:
    if spec.prec >= 0:
        value = value[: spec.prec]
    if verb in ("s", "v"):
        return _pad(spec, value)
    if verb == "q":
        if spec.sharp and _can_backquote(value):
            return _pad(spec, "`" + value + "`")
        return _pad(spec, _quote(value, ascii_only=spec.plus))
    # x / X: hex of the bytes.
    raw = value.encode("utf-8", _SURROGATE)
    pattern = "{:02x}" if verb == "x" else "{:02X}"
    parts = [pattern.format(b) for b in raw]
    prefix = ("0x" if verb == "x" else "0X") if spec.sharp else ""
    joined = prefix + "".join(parts) if parts else ""
    text = " ".join(prefix + p for p in parts) if spec.space else joined
    return _pad(spec, text)


def _bad_verb(verb: str, value: object, spec: _Spec) -> str:
    if value is None or value is NO_VALUE:
        return f"%!{verb}(<nil>)"
    # fmt prints the operand with %v but keeps the flags, width and precision it was given.
    return f"%!{verb}({type_name(value)}={format_value(value, 'v', spec, depth=0)})"


def format_value(value: object, verb: str, spec: _Spec, *, depth: int) -> str:
    """One operand formatted as fmt's printArg/printValue would."""
    if value is None or value is NO_VALUE:
        if depth > 0 and spec.sharp_v:
            return "interface {}(nil)"
        if depth > 0:
            return (
                "<nil>"  # a nil interface inside a container: fmt writes it bare, whatever the verb or width
            )
        if verb == "v":
            return _pad(spec, "<nil>")
        return _bad_verb(verb, value, spec)
    if spec.sharp_v and verb == "v":
        return _format_sharp_v(value, spec, depth)
    if isinstance(value, str):
        if verb in ("v", "s", "q", "x", "X"):
            return _fmt_string(spec, value, verb)
        return _bad_verb(verb, value, spec)
    if isinstance(value, bool):
        if verb in ("v", "t"):
            return _pad(spec, "true" if value else "false")
        return _bad_verb(verb, value, spec)
    if _is_int(value):
        number, unsigned = _int_parts(value)
        if verb in ("v", "d", "b", "o", "O", "x", "X"):
            return _fmt_integer(spec, number, verb, unsigned=unsigned)
        if verb == "c":
            code = number if 0 <= number <= 0x10FFFF and not 0xD800 <= number <= 0xDFFF else 0xFFFD
            return _pad(spec, chr(code))
        if verb == "q":
            return _pad(spec, _quote_rune(number, ascii_only=spec.plus))
        if verb == "U":
            text = f"U+{number:04X}" if number >= 0 else f"U+{number & ((1 << 64) - 1):04X}"
            if spec.sharp and 0 <= number <= 0x10FFFF and chr(number).isprintable():
                text += f" '{chr(number)}'"
            return _pad(spec, text, zero=False)
        return _bad_verb(verb, value, spec)
    if isinstance(value, float):
        if verb in ("v", "g", "G", "e", "E", "f", "F", "x", "X"):
            return _fmt_float(spec, value, verb)
        return _bad_verb(verb, value, spec)
    if isinstance(value, GoStruct):
        parts = []
        for name, field in value.fields:
            text = format_value(field, verb, spec, depth=depth + 1)
            parts.append(f"{name}:{text}" if spec.plus_v else text)
        return "{" + " ".join(parts) + "}"
    if isinstance(value, list | GoSlice):
        items = value.items if isinstance(value, GoSlice) else value
        return "[" + " ".join(format_value(item, verb, spec, depth=depth + 1) for item in items) + "]"
    if isinstance(value, dict):
        parts = [
            format_value(key, verb, spec, depth=depth + 1)
            + ":"
            + format_value(value[key], verb, spec, depth=depth + 1)
            for key in sorted(value, key=lambda k: str(k).encode("utf-8", _SURROGATE))
        ]
        return "map[" + " ".join(parts) + "]"
    return _pad(spec, repr(value))


def _format_sharp_v(value: object, spec: _Spec, depth: int) -> str:
    """%#v: a Go-syntax representation."""
    if isinstance(value, str):
        return _pad(spec, _quote(value))
    if isinstance(value, TypedInt) and value.unsigned:
        return _pad(spec, f"0x{value.value:x}")
    if isinstance(value, GoStruct):
        parts = [f"{name}:{format_value(field, 'v', spec, depth=depth + 1)}" for name, field in value.fields]
        return value.type_name + "{" + ", ".join(parts) + "}"
    if isinstance(value, list | GoSlice):
        if isinstance(value, GoSlice) and value.nil:
            return type_name(value) + "(nil)"
        items = value.items if isinstance(value, GoSlice) else value
        return (
            type_name(value)
            + "{"
            + ", ".join(format_value(i, "v", spec, depth=depth + 1) for i in items)
            + "}"
        )
    if isinstance(value, dict):
        parts = [
            format_value(key, "v", spec, depth=depth + 1)
            + ":"
            + format_value(value[key], "v", spec, depth=depth + 1)
            for key in sorted(value, key=lambda k: str(k).encode("utf-8", _SURROGATE))
        ]
        return type_name(value) + "{" + ", ".join(parts) + "}"
    plain = _Spec()
    plain.wid, plain.minus, plain.zero, plain.plus, plain.space = (
        spec.wid,
        spec.minus,
        spec.zero,
        spec.plus,
        spec.space,
    )
    plain.prec = spec.prec
    return format_value(value, "v", plain, depth=depth)


def _operand(value: object) -> str:
    return format_value(value, "v", PLAIN, depth=0)


def sprint(args: list[object]) -> str:
    """fmt.Sprint: a space between operands when neither side is a string."""
    out: list[str] = []
    prev_string = False
    for i, arg in enumerate(args):
        is_string = isinstance(arg, str)
        if i > 0 and not is_string and not prev_string:
            out.append(" ")
        out.append(_operand(arg))
        prev_string = is_string
    return "".join(out)


def sprintln(args: list[object]) -> str:
    """fmt.Sprintln: always a space between operands, and a newline."""
    return " ".join(_operand(arg) for arg in args) + "\n"


def sprintf(template: str, args: list[object]) -> str:
    """fmt.Sprintf with Go's verbs, flags, width, precision, ``*`` and ``[n]`` argument indexes."""
    out: list[str] = []
    end = len(template)
    arg_num = 0
    i = 0
    reordered = False
    good_arg_num = True
    while i < end:
        start = i
        while i < end and template[i] != "%":
            i += 1
        if i > start:
            out.append(template[start:i])
        if i >= end:
            break
        i += 1  # skip %
        spec = _Spec()
        while i < end:
            ch = template[i]
            if ch == "#":
                spec.sharp = True
            elif ch == "0":
                spec.zero = not spec.minus
            elif ch == "+":
                spec.plus = True
            elif ch == "-":
                spec.minus = True
                spec.zero = False
            elif ch == " ":
                spec.space = True
            else:
                break
            i += 1
        # Width: a number, or * taking an int argument.
        arg_num, i, found = _arg_index(template, i, arg_num, len(args))
        reordered = reordered or found
        good_arg_num = good_arg_num and arg_num >= 0
        if i < end and template[i] == "*":
            i += 1
            width, ok, arg_num = _int_from_arg(args, arg_num)
            if not ok:
                out.append("%!(BADWIDTH)")
            elif width < 0:
                spec.minus = True
                spec.zero = False
                spec.wid = -width
            else:
                spec.wid = width
            reordered = False
        else:
            width, present, i = _parse_num(template, i, end)
            if present:
                spec.wid = width
                if found:
                    good_arg_num = False
        if i + 1 < end and template[i] == ".":
            i += 1
            if reordered:
                good_arg_num = False
            arg_num, i, found = _arg_index(template, i, arg_num, len(args))
            reordered = reordered or found
            if i < end and template[i] == "*":
                i += 1
                prec, ok, arg_num = _int_from_arg(args, arg_num)
                if prec < 0:
                    ok = False
                if not ok:
                    out.append("%!(BADPREC)")
                    spec.prec = -1
                else:
                    spec.prec = prec
                reordered = False
            else:
                spec.prec, _, i = _parse_num(template, i, end)
        if not reordered:
            arg_num, i, found = _arg_index(template, i, arg_num, len(args))
            reordered = reordered or found
        if i >= end:
            out.append("%!(NOVERB)")
            break
        verb = template[i]
        i += 1
        if verb == "%":
            out.append("%")
            continue
        if not good_arg_num:
            out.append(f"%!{verb}(BADINDEX)")
            good_arg_num = True
            continue
        if arg_num >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        arg = args[arg_num]
        arg_num += 1
        if verb == "v" and spec.plus:
            spec.plus = False
            spec.plus_v = True
        if verb == "T":
            out.append(_pad(spec, type_name(arg)))
            continue
        if verb == "v" and spec.sharp:
            spec.sharp = False
            spec.sharp_v = True
        out.append(format_value(arg, verb, spec, depth=0))
    if not reordered and arg_num < len(args):
        extra = []
        for arg in args[arg_num:]:
            if arg is None or arg is NO_VALUE:
                extra.append("<nil>")
            else:
                extra.append(f"{type_name(arg)}={_operand(arg)}")
        out.append("%!(EXTRA " + ", ".join(extra) + ")")
    return "".join(out)


# Go's fmt refuses widths and precisions beyond a million (tooLarge): a template cannot ask for a
# gigabyte of padding.
_MAX_WIDTH = 1_000_000


def _parse_num(template: str, start: int, end: int) -> tuple[int, bool, int]:
    """fmt's parsenum: (number, whether digits were there, next index).

    Like Go, the check comes before each digit is added, so a number may end up to ten times the limit;
    once past it the rest of the format is consumed, which then reports ``%!(NOVERB)``.
    """
    num = 0
    present = False
    i = start
    while i < end and template[i] in "0123456789":
        if num > _MAX_WIDTH:
            return 0, False, end
        num = num * 10 + ord(template[i]) - 48
        present = True
        i += 1
    return num, present, i


def _arg_index(template: str, i: int, arg_num: int, num_args: int) -> tuple[int, int, bool]:
    """Parse an explicit ``[n]`` argument index; returns (arg_num or -1 if bad, new position, found)."""
    if i >= len(template) or template[i] != "[":
        return arg_num, i, False
    close = template.find("]", i + 1)
    if close < 0:
        return -1, len(template), True
    text = template[i + 1 : close]
    if not text.isdigit() or not text.isascii():
        return -1, close + 1, True
    index = int(text) - 1
    if not 0 <= index < num_args:
        return -1, close + 1, True
    return index, close + 1, True


def _int_from_arg(args: list[object], arg_num: int) -> tuple[int, bool, int]:
    if not 0 <= arg_num < len(args):
        return 0, False, arg_num
    arg = args[arg_num]
    if _is_int(arg):
        number, _ = _int_parts(arg)
        return number, -_MAX_WIDTH <= number <= _MAX_WIDTH, arg_num + 1
    return 0, False, arg_num + 1
