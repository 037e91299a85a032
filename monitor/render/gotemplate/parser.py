"""Parser from tokens to node trees, mirroring Go's text/template/parse (names, scoping, error texts)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from monitor.render.gotemplate.errors import GoTemplateError
from monitor.render.gotemplate.lexer import T, Token, go_quote, lex
from monitor.render.gotemplate.nodes import (
    ActionNode,
    BoolNode,
    BranchNode,
    BreakNode,
    ChainNode,
    CommandNode,
    CommentNode,
    ContinueNode,
    DotNode,
    ElseNode,
    EndNode,
    FieldNode,
    IdentifierNode,
    IfNode,
    ListNode,
    NilNode,
    Node,
    NumberNode,
    PipeNode,
    RangeNode,
    StringNode,
    TemplateNode,
    TextNode,
    VariableNode,
    WithNode,
)

# Go's parser recurses on goroutine stacks that grow to a gigabyte, and caps only parentheses (at 10,000,
# since Go 1.20); ours recurses on Python's stack (1,000 frames, a few per level). One cap on every nesting
# the parser recurses through (if/with/range/block bodies, else-if links, parentheses) turns a hostile or
# runaway template into a parse error instead of a RecursionError. Real templates nest a handful deep.
MAX_PARSE_DEPTH = 100

BUILTINS = frozenset(
    [
        "and", "call", "html", "index", "slice", "js", "len", "not", "or", "print", "printf",
        "println", "urlquery", "eq", "ge", "gt", "le", "lt", "ne",
    ]
)  # fmt: skip


@dataclass
class Tree:
    """One named template: its body and the source it came from (for error positions)."""

    name: str
    parse_name: str
    text: str
    root: ListNode | None = None


@dataclass
class TreeSet:
    trees: dict[str, Tree] = field(default_factory=dict)


def is_empty_tree(node: Node | None) -> bool:
    if node is None or isinstance(node, CommentNode):
        return True
    if isinstance(node, ListNode):
        return all(is_empty_tree(n) for n in node.nodes)
    if isinstance(node, TextNode):
        return node.text.strip(" \t\n\r\v\f\x85\xa0") == ""
    return False


# --- string and number literals -------------------------------------------------------------

_SIMPLE_ESCAPES = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92}


def _unquote_char(text: str, i: int, quote: str, out: bytearray) -> int:
    """Decode one (possibly escaped) character at text[i] into out; return the next index."""
    ch = text[i]
    if ch == quote and quote in "'\"":
        raise ValueError("invalid syntax")
    if ch != "\\":
        out += ch.encode("utf-8", "surrogateescape")
        return i + 1
    if i + 1 >= len(text):
        raise ValueError("invalid syntax")
    esc = text[i + 1]
    i += 2
    if esc in _SIMPLE_ESCAPES:
        out.append(_SIMPLE_ESCAPES[esc])
        return i
    if esc in "'\"":
        if esc != quote:
            raise ValueError("invalid syntax")
        out.append(ord(esc))
        return i
    if esc in "xuU":
        size = {"x": 2, "u": 4, "U": 8}[esc]
        digits = text[i : i + size]
        if len(digits) != size or not re.fullmatch(r"[0-9a-fA-F]+", digits):
            raise ValueError("invalid syntax")
        value = int(digits, 16)
        if esc == "x":
            out.append(value)
        else:
            if value > 0x10FFFF or 0xD800 <= value <= 0xDFFF:
                raise ValueError("invalid syntax")
            out += chr(value).encode("utf-8")
        return i + size
    if esc in "01234567":
        digits = text[i - 1 : i + 2]
        if len(digits) != 3 or not re.fullmatch(r"[0-7]{3}", digits):
            raise ValueError("invalid syntax")
        value = int(digits, 8)
        if value > 255:
            raise ValueError("invalid syntax")
        out.append(value)
        return i + 2
    raise ValueError("invalid syntax")


def go_unquote(quoted: str) -> str:
    """strconv.Unquote for "..." and `...` literals; bytes that are not UTF-8 survive as surrogates."""
    if len(quoted) < 2 or quoted[0] != quoted[-1]:
        raise ValueError("invalid syntax")
    body = quoted[1:-1]
    if quoted[0] == "`":
        if "`" in body:
            raise ValueError("invalid syntax")
        return body.replace("\r", "")
    if quoted[0] != '"' or "\n" in body:
        raise ValueError("invalid syntax")
    out = bytearray()
    i = 0
    while i < len(body):
        i = _unquote_char(body, i, '"', out)
    return out.decode("utf-8", "surrogateescape")


def _char_value(text: str) -> int:
    """strconv.UnquoteChar on a 'x' literal: bad escapes are "invalid syntax", leftovers "malformed"."""
    body = text[1:]
    out = bytearray()
    try:
        if not body:
            raise ValueError("invalid syntax")
        end = _unquote_char(body, 0, "'", out)
    except ValueError:
        raise ValueError("invalid syntax") from None
    if body[end:] != "'":
        raise ValueError(f"malformed character constant: {text}")
    if body[0] == "\\" and body[1] in "x01234567":
        return out[0]
    return ord(out.decode("utf-8", "surrogateescape"))


_INT_RE = re.compile(
    r"(?P<sign>[+-]?)(?:0[xX](?P<hex>(?:_?[0-9a-fA-F])+)|0[oO](?P<oct>(?:_?[0-7])+)|0[bB](?P<bin>(?:_?[01])+)"
    r"|0(?P<legacy>(?:_?[0-7])+)|(?P<dec>0|[1-9](?:_?[0-9])*))"
)
_DEC_FLOAT_RE = re.compile(
    r"[+-]?(?:[0-9](?:_?[0-9])*(?:\.(?:[0-9](?:_?[0-9])*)?)?|\.[0-9](?:_?[0-9])*)(?:[eE][+-]?[0-9](?:_?[0-9])*)?"
)
_HEX_FLOAT_RE = re.compile(
    r"(?P<sign>[+-]?)0[xX](?P<mant>_?(?:[0-9a-fA-F]+(?:_[0-9a-fA-F]+)*)?(?:\.(?:[0-9a-fA-F]+(?:_[0-9a-fA-F]+)*)?)?)"
    r"[pP](?P<exp>[+-]?[0-9]+(?:_[0-9]+)*)"
)


def _parse_int(text: str, *, signed: bool) -> int | None:
    match = _INT_RE.fullmatch(text)
    if match is None:
        return None
    sign = match["sign"]
    if sign and not signed:
        return None
    for group, base in (("hex", 16), ("oct", 8), ("bin", 2), ("legacy", 8), ("dec", 10)):
        digits = match[group]
        if digits is not None:
            value = int(digits.replace("_", ""), base)
            break
    else:  # pragma: no cover - the regex always sets one group
        return None
    if sign == "-":
        value = -value
    if signed:
        return value if -(1 << 63) <= value < (1 << 63) else None
    return value if value < (1 << 64) else None


def _parse_float(text: str) -> float | None:
    if _DEC_FLOAT_RE.fullmatch(text):
        value = float(text.replace("_", ""))
        if value in (float("inf"), float("-inf")):
            return None  # strconv reports a range error
        return value
    match = _HEX_FLOAT_RE.fullmatch(text)
    if match is not None:
        mant = match["mant"].replace("_", "")
        if mant in ("", "."):
            return None
        if "." not in mant:
            mant += "."
        value = float.fromhex(f"{match['sign']}0x{mant}p{int(match['exp'].replace('_', ''))}")
        if value in (float("inf"), float("-inf")):
            return None
        return value
    return None


def new_number(pos: int, text: str, typ: T) -> NumberNode:
    """Go's parse.newNumber: classify a literal as int, uint and/or float."""
    node = NumberNode(pos, text)
    if typ == T.CHAR_CONSTANT:
        value = _char_value(text)
        node.is_int = node.is_uint = node.is_float = True
        node.as_int = node.as_uint = value
        node.as_float = float(value)
        return node
    if typ == T.COMPLEX or text.endswith("i"):
        raise ValueError(f"complex constants are not supported: {go_quote(text)}")
    unsigned = _parse_int(text, signed=False)
    if unsigned is not None:
        node.is_uint = True
        node.as_uint = unsigned
    signed = _parse_int(text, signed=True)
    if signed is not None:
        node.is_int = True
        node.as_int = signed
        if signed == 0 and text.startswith("-"):
            node.as_int = 0
    if node.is_int:
        node.is_float = True
        node.as_float = float(node.as_int)
    elif node.is_uint:
        node.is_float = True
        node.as_float = float(node.as_uint)
    else:
        parsed = _parse_float(text)
        if parsed is not None:
            if not any(c in text for c in ".eEpP"):
                raise ValueError(f"integer overflow: {go_quote(text)}")
            node.is_float = True
            node.as_float = parsed
            if parsed == int(parsed) and -(1 << 63) <= int(parsed) < (1 << 63):
                node.is_int = True
                node.as_int = int(parsed)
            if parsed == int(parsed) and 0 <= int(parsed) < (1 << 64):
                node.is_uint = True
                node.as_uint = int(parsed)
    if not (node.is_int or node.is_uint or node.is_float):
        raise ValueError(f"illegal number syntax: {go_quote(text)}")
    return node


# --- the parser -----------------------------------------------------------------------------


class _Parser:
    def __init__(self, tree: Tree, tokens: list[Token], index: int, tree_set: TreeSet) -> None:
        self.tree = tree
        self.tokens = tokens
        self.index = index
        self.tree_set = tree_set
        self.vars = ["$"]
        self.range_depth = 0
        self.depth = 0
        self.action_line = 0
        self.last = tokens[index] if tokens else Token(T.EOF, "", 0, 1)

    # token stream
    def next(self) -> Token:
        if self.index < len(self.tokens):
            token = self.tokens[self.index]
        else:
            # Past the end Go's closed channel yields zero items (an empty error).
            token = Token(T.ERROR, "", len(self.tree.text), self.tokens[-1].line if self.tokens else 1)
        self.index += 1
        self.last = token
        return token

    def backup(self, count: int = 1) -> None:
        self.index -= count

    def peek(self) -> Token:
        token = self.next()
        self.backup()
        return token

    def next_non_space(self) -> Token:
        token = self.next()
        while token.typ == T.SPACE:
            token = self.next()
        return token

    def peek_non_space(self) -> Token:
        token = self.next_non_space()
        self.backup()
        return token

    # errors
    def errorf(self, message: str) -> GoTemplateError:
        """The error to raise, at the line of the last token read (like Go's t.token[0])."""
        line = self.last.line
        return GoTemplateError(
            f"template: {self.tree.parse_name}:{line}: {message}", name=self.tree.parse_name, line=line
        )

    def unexpected(self, token: Token, context: str) -> GoTemplateError:
        if token.typ == T.ERROR:
            extra = ""
            if self.action_line != 0 and self.action_line != token.line:
                extra = f" in action started at {self.tree.parse_name}:{self.action_line}"
                if token.val.endswith(" action"):
                    extra = extra[len(" in action") :]
            return self.errorf(f"{token.describe()}{extra}")
        return self.errorf(f"unexpected {token.describe()} in {context}")

    def expect(self, typ: T, context: str) -> Token:
        token = self.next_non_space()
        if token.typ != typ:
            raise self.unexpected(token, context)
        return token

    # tree set
    def add(self, tree: Tree) -> None:
        existing = self.tree_set.trees.get(tree.name)
        if existing is None or is_empty_tree(existing.root):
            self.tree_set.trees[tree.name] = tree
            return
        if not is_empty_tree(tree.root):
            raise self.errorf(f"template: multiple definition of template {go_quote(tree.name)}")

    def sub_parser(self, name: str) -> _Parser:
        tree = Tree(name=name, parse_name=self.tree.parse_name, text=self.tree.text)
        sub = _Parser(tree, self.tokens, self.index, self.tree_set)
        sub.depth = self.depth
        return sub

    def deeper(self, what: str) -> None:
        """Enter one more nesting level; the caller leaves it with ``self.depth -= 1``."""
        if self.depth >= MAX_PARSE_DEPTH:
            raise self.errorf(f"max {what} depth exceeded")
        self.depth += 1

    # grammar
    def parse(self) -> None:
        self.tree.root = ListNode(self.peek().pos)
        while self.peek().typ != T.EOF:
            if self.peek().typ == T.LEFT_DELIM:
                delim_index = self.index
                self.next()
                if self.next_non_space().typ == T.DEFINE:
                    sub = self.sub_parser("definition")
                    sub.index = self.index
                    sub.parse_definition()
                    self.index = sub.index
                    continue
                self.index = delim_index
            node = self.text_or_action()
            if isinstance(node, EndNode | ElseNode):
                raise self.errorf(f"unexpected {node}")
            self.tree.root.nodes.append(node)

    def parse_definition(self) -> None:
        context = "define clause"
        token = self.next_non_space()
        if token.typ not in (T.STRING, T.RAW_STRING):
            raise self.unexpected(token, context)
        try:
            self.tree.name = go_unquote(token.val)
        except ValueError as exc:
            raise self.errorf(str(exc)) from None
        self.expect(T.RIGHT_DELIM, context)
        root, end = self.item_list()
        self.tree.root = root
        if not isinstance(end, EndNode):
            raise self.errorf(f"unexpected {end} in {context}")
        self.add(self.tree)

    def item_list(self) -> tuple[ListNode, Node]:
        items = ListNode(self.peek_non_space().pos)
        while self.peek_non_space().typ != T.EOF:
            node = self.text_or_action()
            if isinstance(node, EndNode | ElseNode):
                return items, node
            items.nodes.append(node)
        raise self.errorf("unexpected EOF")

    def text_or_action(self) -> Node:
        token = self.next_non_space()
        if token.typ == T.TEXT:
            return TextNode(token.pos, token.val)
        if token.typ == T.LEFT_DELIM:
            self.action_line = token.line
            try:
                return self.action()
            finally:
                self.action_line = 0
        raise self.unexpected(token, "input")

    def action(self) -> Node:
        token = self.next_non_space()
        typ = token.typ
        if typ == T.BLOCK:
            return self.block_control()
        if typ == T.BREAK:
            return self.loop_control(token, "break")
        if typ == T.CONTINUE:
            return self.loop_control(token, "continue")
        if typ == T.ELSE:
            return self.else_control()
        if typ == T.END:
            end = self.expect(T.RIGHT_DELIM, "end")
            return EndNode(end.pos)
        if typ == T.IF:
            return self.branch_control(IfNode, "if", allow_else_if=True)
        if typ == T.RANGE:
            return self.branch_control(RangeNode, "range", allow_else_if=False)
        if typ == T.TEMPLATE:
            return self.template_control()
        if typ == T.WITH:
            return self.branch_control(WithNode, "with", allow_else_if=False)
        self.backup()
        token = self.peek()
        return ActionNode(token.pos, token.line, self.pipeline("command", T.RIGHT_DELIM))

    def loop_control(self, keyword: Token, word: str) -> Node:
        token = self.next_non_space()
        if token.typ != T.RIGHT_DELIM:
            raise self.unexpected(token, "{{" + word + "}}")
        if self.range_depth == 0:
            raise self.errorf("{{" + word + "}} outside {{range}}")
        if word == "break":
            return BreakNode(keyword.pos, keyword.line)
        return ContinueNode(keyword.pos, keyword.line)

    def pipeline(self, context: str, end: T) -> PipeNode:
        token = self.peek_non_space()
        pipe = PipeNode(token.pos, token.line)
        while True:  # declarations
            v = self.peek_non_space()
            if v.typ != T.VARIABLE:
                break
            at_variable = self.index
            self.next_non_space()
            nxt = self.peek_non_space()
            if nxt.typ in (T.ASSIGN, T.DECLARE):
                pipe.is_assign = nxt.typ == T.ASSIGN
                self.next_non_space()
                pipe.decl.append(VariableNode(v.pos, v.val.split(".")))
                self.vars.append(v.val)
            elif nxt.typ == T.CHAR and nxt.val == ",":
                self.next_non_space()
                pipe.decl.append(VariableNode(v.pos, v.val.split(".")))
                self.vars.append(v.val)
                if context == "range" and len(pipe.decl) < 2:
                    if self.peek_non_space().typ in (T.VARIABLE, T.RIGHT_DELIM, T.RIGHT_PAREN):
                        continue
                    raise self.errorf("range can only initialize variables")
                raise self.errorf(f"too many declarations in {context}")
            else:
                # Not a declaration: the variable is the first operand.
                self.index = at_variable
            break
        while True:
            token = self.next_non_space()
            if token.typ == end:
                self.check_pipeline(pipe, context)
                return pipe
            if token.typ in (
                T.BOOL, T.CHAR_CONSTANT, T.COMPLEX, T.DOT, T.FIELD, T.IDENTIFIER, T.NUMBER, T.NIL,
                T.RAW_STRING, T.STRING, T.VARIABLE, T.LEFT_PAREN,
            ):  # fmt: skip
                self.backup()
                pipe.cmds.append(self.command())
            else:
                raise self.unexpected(token, context)

    def check_pipeline(self, pipe: PipeNode, context: str) -> None:
        if not pipe.cmds:
            raise self.errorf(f"missing value for {context}")
        for i, cmd in enumerate(pipe.cmds[1:]):
            if isinstance(cmd.args[0], BoolNode | DotNode | NilNode | NumberNode | StringNode):
                raise self.errorf(f"non executable command in pipeline stage {i + 2}")

    def branch_control(self, cls: type[BranchNode], context: str, *, allow_else_if: bool) -> Node:
        depth = len(self.vars)
        self.deeper("nesting")
        try:
            pipe = self.pipeline(context, T.RIGHT_DELIM)
            if context == "range":
                self.range_depth += 1
            body, nxt = self.item_list()
            if context == "range":
                self.range_depth -= 1
            else_list: ListNode | None = None
            if isinstance(nxt, ElseNode):
                if allow_else_if and self.peek().typ == T.IF:
                    self.next()
                    else_list = ListNode(nxt.pos)
                    else_list.nodes.append(self.branch_control(IfNode, "if", allow_else_if=True))
                else:
                    else_list, nxt = self.item_list()
                    if not isinstance(nxt, EndNode):
                        raise self.errorf(f"expected end; found {nxt}")
        finally:
            del self.vars[depth:]
            self.depth -= 1
        return cls(pipe.pos, pipe.line, context, pipe, body, else_list)

    def else_control(self) -> Node:
        peek = self.peek_non_space()
        if peek.typ == T.IF:
            return ElseNode(peek.pos, peek.line)
        token = self.expect(T.RIGHT_DELIM, "else")
        return ElseNode(token.pos, token.line)

    def template_name(self, token: Token, context: str) -> str:
        if token.typ not in (T.STRING, T.RAW_STRING):
            raise self.unexpected(token, context)
        try:
            return go_unquote(token.val)
        except ValueError as exc:
            raise self.errorf(str(exc)) from None

    def block_control(self) -> Node:
        context = "block clause"
        token = self.next_non_space()
        name = self.template_name(token, context)
        pipe = self.pipeline(context, T.RIGHT_DELIM)
        sub = self.sub_parser(name)
        sub.index = self.index
        sub.deeper("nesting")
        root, end = sub.item_list()
        self.index = sub.index
        self.last = sub.last
        sub.tree.root = root
        if not isinstance(end, EndNode):
            raise self.errorf(f"unexpected {end} in {context}")
        sub.add(sub.tree)
        return TemplateNode(token.pos, token.line, name, pipe)

    def template_control(self) -> Node:
        context = "template clause"
        token = self.next_non_space()
        name = self.template_name(token, context)
        pipe: PipeNode | None = None
        if self.next_non_space().typ != T.RIGHT_DELIM:
            self.backup()
            pipe = self.pipeline(context, T.RIGHT_DELIM)
        return TemplateNode(token.pos, token.line, name, pipe)

    def command(self) -> CommandNode:
        cmd = CommandNode(self.peek_non_space().pos)
        while True:
            self.peek_non_space()
            operand = self.operand()
            if operand is not None:
                cmd.args.append(operand)
            token = self.next()
            if token.typ == T.SPACE:
                continue
            if token.typ in (T.RIGHT_DELIM, T.RIGHT_PAREN):
                self.backup()
            elif token.typ != T.PIPE:
                raise self.unexpected(token, "operand")
            break
        if not cmd.args:
            raise self.errorf("empty command")
        return cmd

    def operand(self) -> Node | None:
        node = self.term()
        if node is None:
            return None
        if self.peek().typ == T.FIELD:
            chain = ChainNode(self.peek().pos, node)
            while self.peek().typ == T.FIELD:
                chain.fields.append(self.next().val[1:])
            if isinstance(node, FieldNode):
                return FieldNode(chain.pos, node.idents + chain.fields)
            if isinstance(node, VariableNode):
                return VariableNode(chain.pos, node.idents + chain.fields)
            if isinstance(node, BoolNode | StringNode | NumberNode | NilNode | DotNode):
                raise self.errorf(f"unexpected . after term {go_quote(str(node))}")
            return chain
        return node

    def term(self) -> Node | None:
        token = self.next_non_space()
        typ = token.typ
        if typ == T.IDENTIFIER:
            if token.val not in BUILTINS:
                raise self.errorf(f"function {go_quote(token.val)} not defined")
            return IdentifierNode(token.pos, token.val)
        if typ == T.DOT:
            return DotNode(token.pos)
        if typ == T.NIL:
            return NilNode(token.pos)
        if typ == T.VARIABLE:
            return self.use_var(token)
        if typ == T.FIELD:
            return FieldNode(token.pos, token.val[1:].split("."))
        if typ == T.BOOL:
            return BoolNode(token.pos, token.val == "true")
        if typ in (T.CHAR_CONSTANT, T.COMPLEX, T.NUMBER):
            try:
                return new_number(token.pos, token.val, typ)
            except ValueError as exc:
                raise self.errorf(str(exc)) from None
        if typ == T.LEFT_PAREN:
            self.deeper("expression")  # Go's own words for its parenthesis cap
            try:
                return self.pipeline("parenthesized pipeline", T.RIGHT_PAREN)
            finally:
                self.depth -= 1
        if typ in (T.STRING, T.RAW_STRING):
            try:
                text = go_unquote(token.val)
            except ValueError as exc:
                raise self.errorf(str(exc)) from None
            return StringNode(token.pos, token.val, text)
        self.backup()
        return None

    def use_var(self, token: Token) -> Node:
        idents = token.val.split(".")
        if idents[0] in self.vars:
            return VariableNode(token.pos, idents)
        raise self.errorf(f"undefined variable {go_quote(idents[0])}")


def parse_trees(text: str, *, name: str) -> dict[str, Tree]:
    """Parse a template source into its named trees (the main one under ``name``)."""
    tokens = lex(text)
    tree_set = TreeSet()
    tree = Tree(name=name, parse_name=name, text=text)
    parser = _Parser(tree, tokens, 0, tree_set)
    parser.parse()
    parser.add(tree)
    return tree_set.trees
