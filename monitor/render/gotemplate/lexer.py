"""Tokenizer for Go text/template source: text, actions, trim markers, comments and action tokens."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from enum import IntEnum


class T(IntEnum):
    """Token types; keywords come after KEYWORD like in Go's lexer."""

    ERROR = 0
    BOOL = 1
    CHAR = 2
    CHAR_CONSTANT = 3
    COMPLEX = 4
    ASSIGN = 5
    DECLARE = 6
    EOF = 7
    FIELD = 8
    IDENTIFIER = 9
    LEFT_DELIM = 10
    LEFT_PAREN = 11
    NUMBER = 12
    PIPE = 13
    RAW_STRING = 14
    RIGHT_DELIM = 15
    RIGHT_PAREN = 16
    SPACE = 17
    STRING = 18
    TEXT = 19
    VARIABLE = 20
    KEYWORD = 21
    BLOCK = 22
    BREAK = 23
    CONTINUE = 24
    DOT = 25
    DEFINE = 26
    ELSE = 27
    END = 28
    IF = 29
    NIL = 30
    RANGE = 31
    TEMPLATE = 32
    WITH = 33


KEYWORDS = {
    ".": T.DOT,
    "block": T.BLOCK,
    "break": T.BREAK,
    "continue": T.CONTINUE,
    "define": T.DEFINE,
    "else": T.ELSE,
    "end": T.END,
    "if": T.IF,
    "range": T.RANGE,
    "nil": T.NIL,
    "template": T.TEMPLATE,
    "with": T.WITH,
}

LEFT = "{{"
RIGHT = "}}"
SPACE_CHARS = " \t\r\n"


@dataclass(frozen=True, slots=True)
class Token:
    typ: T
    val: str
    pos: int
    line: int

    def describe(self) -> str:
        """How Go's parser names a token in messages."""
        if self.typ == T.EOF:
            return "EOF"
        if self.typ == T.ERROR:
            return self.val
        if self.typ > T.KEYWORD:
            return f"<{self.val}>"
        if len(self.val) > 10:
            return go_quote_prefix(self.val, 10) + "..."
        return go_quote(self.val)


def go_quote(text: str) -> str:
    """strconv.Quote for messages (ASCII escapes, printable Unicode kept)."""
    out = ['"']
    for ch in text:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}" if ord(ch) >= 0x20 else f"\\x{ord(ch):02x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)


def go_quote_prefix(text: str, runes: int) -> str:
    return go_quote(text[:runes])


def is_space(ch: str) -> bool:
    return ch in (" ", "\t", "\r", "\n") and ch != ""


def is_alnum(ch: str) -> bool:
    if ch == "_":
        return True
    if not ch:
        return False
    if ch.isascii():
        return ch.isalnum()
    cat = unicodedata.category(ch)
    return cat.startswith("L") or cat == "Nd"


def format_rune(ch: str) -> str:
    """Go's %#U: U+0041 'A'."""
    code = ord(ch)
    text = f"U+{code:04X}"
    if ch.isprintable():
        text += f" '{ch}'"
    return text


class _Lexer:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.start = 0
        self.tokens: list[Token] = []
        self.paren_depth = 0
        self._line_pos = 0
        self._line = 1

    def line_at(self, pos: int) -> int:
        # Counted on from the previous token, not from the start: a large template must lex in linear time.
        if pos < self._line_pos:
            self._line_pos, self._line = 0, 1
        self._line += self.text.count("\n", self._line_pos, pos)
        self._line_pos = pos
        return self._line

    def emit(self, typ: T) -> None:
        self.tokens.append(Token(typ, self.text[self.start : self.pos], self.start, self.line_at(self.start)))
        self.start = self.pos

    def error(self, message: str) -> bool:
        self.tokens.append(Token(T.ERROR, message, self.start, self.line_at(self.start)))
        return False

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def next(self) -> str:
        if self.pos >= len(self.text):
            self.pos = len(self.text) + 1  # past the end, as Go's atEOF
            return ""
        ch = self.text[self.pos]
        self.pos += 1
        return ch

    def backup(self) -> None:
        if self.pos <= len(self.text):
            self.pos -= 1
        else:
            self.pos = len(self.text)

    def run(self) -> list[Token]:
        text = self.text
        while True:
            index = text.find(LEFT, self.pos)
            if index < 0:
                self.pos = len(text)
                if self.pos > self.start:
                    self.emit(T.TEXT)
                self.emit(T.EOF)
                return self.tokens
            after = text[index + 2 : index + 4]
            trim_left = len(after) >= 2 and after[0] == "-" and after[1] in SPACE_CHARS
            end_text = index
            if trim_left:
                end_text = len(text[self.start : index].rstrip(SPACE_CHARS)) + self.start
            if end_text > self.start:
                self.pos = end_text
                self.emit(T.TEXT)
            self.pos = index
            self.start = index
            if not self.left_delim(trim_left):
                return self.tokens

    def left_delim(self, trim: bool) -> bool:
        self.pos += len(LEFT)
        after_marker = 2 if trim else 0
        if self.text.startswith("/*", self.pos + after_marker):
            self.pos += after_marker
            self.start = self.pos
            return self.comment()
        self.emit(T.LEFT_DELIM)
        self.pos += after_marker
        self.start = self.pos
        self.paren_depth = 0
        return self.inside_action()

    def at_right_delim(self) -> tuple[bool, bool]:
        text = self.text
        p = self.pos
        if (
            p + 1 < len(text)
            and text[p] in SPACE_CHARS
            and text[p + 1] == "-"
            and text.startswith(RIGHT, p + 2)
        ):
            return True, True
        if text.startswith(RIGHT, p):
            return True, False
        return False, False

    def comment(self) -> bool:
        self.pos += 2
        index = self.text.find("*/", self.pos)
        if index < 0:
            return self.error("unclosed comment")
        self.pos = index + 2
        delim, trim = self.at_right_delim()
        if not delim:
            return self.error("comment ends before closing delimiter")
        if trim:
            self.pos += 2
        self.pos += len(RIGHT)
        if trim:
            self.pos += len(self.text[self.pos :]) - len(self.text[self.pos :].lstrip(SPACE_CHARS))
        self.start = self.pos
        return True

    def right_delim(self) -> bool:
        text = self.text
        trim = self.pos + 1 < len(text) and text[self.pos] in SPACE_CHARS and text[self.pos + 1] == "-"
        if trim:
            self.pos += 2
            self.start = self.pos
        self.pos += len(RIGHT)
        self.emit(T.RIGHT_DELIM)
        if trim:
            rest = text[self.pos :]
            self.pos += len(rest) - len(rest.lstrip(SPACE_CHARS))
            self.start = self.pos
        return True

    def inside_action(self) -> bool:
        while True:
            delim, _ = self.at_right_delim()
            if delim:
                if self.paren_depth == 0:
                    return self.right_delim()
                return self.error("unclosed left paren")
            ch = self.next()
            if ch == "":
                return self.error("unclosed action")
            if ch in SPACE_CHARS:
                self.backup()
                if not self.space():
                    return self.right_delim()
            elif ch == "=":
                self.emit(T.ASSIGN)
            elif ch == ":":
                if self.next() != "=":
                    return self.error("expected :=")
                self.emit(T.DECLARE)
            elif ch == "|":
                self.emit(T.PIPE)
            elif ch == '"':
                if not self.quote():
                    return False
            elif ch == "`":
                if not self.raw_quote():
                    return False
            elif ch == "$":
                if not self.variable():
                    return False
            elif ch == "'":
                if not self.char():
                    return False
            elif ch == "." and self.pos < len(self.text) and not ("0" <= self.text[self.pos] <= "9"):
                if not self.field_or_variable(T.FIELD):
                    return False
            elif ch == "." or ch in "+-" or "0" <= ch <= "9":
                self.backup()
                if not self.number():
                    return False
            elif is_alnum(ch):
                self.backup()
                if not self.identifier():
                    return False
            elif ch == "(":
                self.emit(T.LEFT_PAREN)
                self.paren_depth += 1
            elif ch == ")":
                self.emit(T.RIGHT_PAREN)
                self.paren_depth -= 1
                if self.paren_depth < 0:
                    return self.error(f"unexpected right paren {format_rune(ch)}")
            elif ord(ch) < 0x80 and ch.isprintable():
                self.emit(T.CHAR)
            else:
                return self.error(f"unrecognized character in action: {format_rune(ch)}")

    def space(self) -> bool:
        """Consume spaces; False means we stand on a ' -}}' trim delimiter with a single space."""
        spaces = 0
        while self.peek() and self.peek() in SPACE_CHARS:
            self.next()
            spaces += 1
        text = self.text
        p = self.pos - 1
        if (
            p + 1 < len(text)
            and text[p] in SPACE_CHARS
            and text[p + 1] == "-"
            and text.startswith(RIGHT, p + 2)
        ):
            self.backup()
            if spaces == 1:
                return False
        self.emit(T.SPACE)
        return True

    def at_terminator(self) -> bool:
        ch = self.peek()
        if ch == "" or ch in SPACE_CHARS or ch in ".,|:)(":
            return True
        return self.text.startswith(RIGHT, self.pos)

    def identifier(self) -> bool:
        while True:
            ch = self.next()
            if not is_alnum(ch):
                self.backup()
                word = self.text[self.start : self.pos]
                if not self.at_terminator():
                    return self.error(f"bad character {format_rune(ch) if ch else 'U+FFFFFFFF'}")
                if word in KEYWORDS and KEYWORDS[word] > T.KEYWORD:
                    self.emit(KEYWORDS[word])
                elif word[0] == ".":
                    self.emit(T.FIELD)
                elif word in ("true", "false"):
                    self.emit(T.BOOL)
                else:
                    self.emit(T.IDENTIFIER)
                return True

    def variable(self) -> bool:
        if self.at_terminator():
            self.emit(T.VARIABLE)
            return True
        return self.field_or_variable(T.VARIABLE)

    def field_or_variable(self, typ: T) -> bool:
        if self.at_terminator():
            self.emit(T.VARIABLE if typ == T.VARIABLE else T.DOT)
            return True
        while True:
            ch = self.next()
            if not is_alnum(ch):
                self.backup()
                break
        if not self.at_terminator():
            return self.error(f"bad character {format_rune(ch) if ch else 'U+FFFFFFFF'}")
        self.emit(typ)
        return True

    def char(self) -> bool:
        return self._escaped_literal("'", T.CHAR_CONSTANT, "unterminated character constant")

    def _escaped_literal(self, closing: str, token: T, unterminated: str) -> bool:
        """Scan to ``closing``, skipping backslash escapes; a newline or the end of input is an error."""
        while True:
            ch = self.next()
            if ch == "\\":
                nxt = self.next()
                if nxt not in ("", "\n"):
                    continue
                return self.error(unterminated)
            if ch in ("", "\n"):
                return self.error(unterminated)
            if ch == closing:
                break
        self.emit(token)
        return True

    def accept(self, valid: str) -> bool:
        ch = self.next()
        if ch and ch in valid:
            return True
        self.backup()
        return False

    def accept_run(self, valid: str) -> None:
        while True:
            ch = self.next()
            if not ch or ch not in valid:
                self.backup()
                return

    def scan_number(self) -> bool:
        self.accept("+-")
        digits = "0123456789_"
        if self.accept("0"):
            if self.accept("xX"):
                digits = "0123456789abcdefABCDEF_"
            elif self.accept("oO"):
                digits = "01234567_"
            elif self.accept("bB"):
                digits = "01_"
        self.accept_run(digits)
        if self.accept("."):
            self.accept_run(digits)
        if len(digits) == 11 and self.accept("eE"):
            self.accept("+-")
            self.accept_run("0123456789_")
        if len(digits) == 23 and self.accept("pP"):
            self.accept("+-")
            self.accept_run("0123456789_")
        self.accept("i")
        if is_alnum(self.peek()):
            self.next()
            return False
        return True

    def number(self) -> bool:
        if not self.scan_number():
            return self.error(f"bad number syntax: {go_quote(self.text[self.start : self.pos])}")
        if self.peek() in ("+", "-"):
            if not self.scan_number() or self.text[self.pos - 1] != "i":
                return self.error(f"bad number syntax: {go_quote(self.text[self.start : self.pos])}")
            self.emit(T.COMPLEX)
        else:
            self.emit(T.NUMBER)
        return True

    def quote(self) -> bool:
        return self._escaped_literal('"', T.STRING, "unterminated quoted string")

    def raw_quote(self) -> bool:
        while True:
            ch = self.next()
            if ch == "":
                return self.error("unterminated raw quoted string")
            if ch == "`":
                break
        self.emit(T.RAW_STRING)
        return True


def lex(text: str) -> list[Token]:
    """All tokens of a template; a lexing error ends the list with an ERROR token."""
    return _Lexer(text).run()
