"""Tree-walking evaluator of parsed Go templates, following text/template's exec.go semantics."""

from __future__ import annotations

from typing import Final

from monitor.render.gotemplate import gofmt
from monitor.render.gotemplate.errors import BreakLoop, ContinueLoop, GoOutputTooLarge, GoTemplateError
from monitor.render.gotemplate.funcs import BUILTIN_SIGNATURES, CallError, is_true, truth
from monitor.render.gotemplate.lexer import go_quote
from monitor.render.gotemplate.nodes import (
    ActionNode,
    BoolNode,
    BreakNode,
    ChainNode,
    CommandNode,
    CommentNode,
    ContinueNode,
    DotNode,
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
from monitor.render.gotemplate.parser import Tree
from monitor.render.gotemplate.values import NO_VALUE, GoSlice, GoStruct, InterfaceTyped, TypedInt, type_name


class _Missing:
    __slots__ = ()


# Go's missingVal: "no final value from a previous pipeline stage" (distinct from NO_VALUE).
_MISSING: Final = _Missing()

# Go stops template calls 100,000 deep (maxExecDepth), on stacks that grow to a gigabyte.
MAX_DEPTH: Final = 100_000
# Ours is Python's stack (1,000 frames, shared with the caller), so the evaluator keeps its own account of the
# frames it stacks up: each template call, if/with/range body and parenthesized pipeline adds what it costs
# (measured). Running out of this budget (about 120 calls of a small recursive template) ends the run with
# Go's error for too deep a recursion, where Go itself would end every recursion that does not terminate.
FRAME_BUDGET: Final = 600
_CALL, _BODY, _RANGE_BODY, _PAREN_COMMAND, _PAREN_ARG = 3, 2, 3, 2, 4


class OutputTooLarge(Exception):
    """The output passed the limit given to :func:`execute`."""


class _Output:
    """The output so far, in pieces; refuses to grow past ``limit`` bytes (UTF-8) when one is set."""

    __slots__ = ("limit", "parts", "size")

    def __init__(self, limit: int | None) -> None:
        self.parts: list[str] = []
        self.size = 0
        self.limit = limit

    def write(self, text: str) -> None:
        if self.limit is not None:
            self.size += len(text) if text.isascii() else len(text.encode("utf-8", "surrogateescape"))
            if self.size > self.limit:
                raise OutputTooLarge
        self.parts.append(text)


class _State:
    __slots__ = ("arg_iface", "dot_iface", "frames", "last_from_map", "node", "out", "tree", "trees", "vars")

    def __init__(self, trees: dict[str, Tree], tree: Tree, out: _Output, dot: object, frames: int) -> None:
        self.trees = trees
        self.tree = tree
        self.out = out
        # Each variable: [name, value, whether its static type is interface {}].
        self.vars: list[list[object]] = [["$", dot, False]]
        self.node: Node | None = None
        # Go keeps the static type interface {} on a value read from a map or []interface {} (a range
        # element, a map field) until a pipeline unwraps it; only slice's indexes can tell (see eval_function).
        self.dot_iface = False
        self.last_from_map = False
        self.arg_iface = False
        # Frames stacked up by calls, bodies and parentheses under way (see FRAME_BUDGET).
        self.frames = frames

    # errors ------------------------------------------------------------------------------
    def errorf(self, message: str) -> GoTemplateError:
        name = self.tree.name
        node = self.node
        if node is None:
            return GoTemplateError(f"template: {name}: {message}", name=name, line=None)
        text = self.tree.text[: node.pos]
        line = text.count("\n") + 1
        # Go counts the column in bytes.
        col = len(text[text.rfind("\n") + 1 :].encode("utf-8", "surrogateescape"))
        context = str(node)
        return GoTemplateError(
            f"template: {self.tree.parse_name}:{line}:{col}: executing {go_quote(name)} at <{context}>: {message}",
            name=name,
            line=line,
        )

    # walking -----------------------------------------------------------------------------
    def walk(self, dot: object, node: Node) -> None:
        cls = type(node)
        if cls is TextNode:
            assert isinstance(node, TextNode)
            self.out.write(node.text)
        elif cls is ActionNode:
            assert isinstance(node, ActionNode)
            self.node = node
            value = self.eval_pipeline(dot, node.pipe)
            if not node.pipe.decl:
                self.print_value(node, value)
        elif cls is ListNode:
            assert isinstance(node, ListNode)
            for child in node.nodes:
                self.walk(dot, child)
        elif cls is IfNode or cls is WithNode:
            assert isinstance(node, IfNode | WithNode)
            mark = len(self.vars)
            self.node = node
            value = self.eval_pipeline(dot, node.pipe)
            ok, is_truthy = is_true(value)
            if not ok:
                raise self.errorf(f"if/with can't use {gofmt.format_value(value, 'v', gofmt.PLAIN, depth=0)}")
            self.deeper(_BODY)
            if is_truthy and cls is WithNode:
                dot_iface, self.dot_iface = self.dot_iface, False  # with's dot is a pipeline's value
                self.walk(value, node.list)
                self.dot_iface = dot_iface
            elif is_truthy:
                self.walk(dot, node.list)
            elif node.else_list is not None:
                self.walk(dot, node.else_list)
            self.frames -= _BODY
            del self.vars[mark:]
        elif cls is RangeNode:
            assert isinstance(node, RangeNode)
            self.walk_range(dot, node)
        elif cls is TemplateNode:
            assert isinstance(node, TemplateNode)
            self.walk_template(dot, node)
        elif cls is BreakNode:
            raise BreakLoop
        elif cls is ContinueNode:
            raise ContinueLoop
        elif cls is CommentNode:
            pass
        else:  # pragma: no cover - the parser only builds the nodes above
            self.node = node
            raise self.errorf(f"unknown node: {node}")

    def deeper(self, cost: int) -> None:
        """Enter a level that stacks ``cost`` frames; the caller gives them back (walk_range resets its own)."""
        if self.frames + cost > FRAME_BUDGET:
            raise self.errorf(f"exceeded maximum template depth ({MAX_DEPTH})")
        self.frames += cost

    def walk_range(self, dot: object, node: RangeNode) -> None:
        outer = len(self.vars)
        frames = self.frames
        self.node = node
        value = self.eval_pipeline(dot, node.pipe)
        mark = len(self.vars)
        decls = len(node.pipe.decl)
        items: list[tuple[object, object]] | None = None
        elems_iface = isinstance(value, list | dict)
        if isinstance(value, list):
            items = list(enumerate(value))
        elif isinstance(value, GoSlice):
            items = list(enumerate(value.items))
        elif isinstance(value, dict):
            items = [(k, value[k]) for k in sorted(value, key=lambda k: k.encode("utf-8", "surrogateescape"))]
        elif value is not NO_VALUE:
            raise self.errorf(
                f"range can't iterate over {gofmt.format_value(value, 'v', gofmt.PLAIN, depth=0)}"
            )
        self.deeper(_RANGE_BODY)
        try:
            if items:
                body = node.list
                dot_iface, self.dot_iface = self.dot_iface, elems_iface
                for index, elem in items:
                    if decls > 0:
                        self.vars[mark - 1][1:] = [elem, elems_iface]
                    if decls > 1:
                        self.vars[mark - 2][1:] = [index, False]
                    try:
                        self.walk(elem, body)
                    except ContinueLoop:
                        self.frames = frames + _RANGE_BODY  # give back what the continue jumped out of
                    del self.vars[mark:]
                self.dot_iface = dot_iface
                return
            if node.else_list is not None:
                self.walk(dot, node.else_list)
        except BreakLoop:
            pass
        finally:
            self.frames = frames
            del self.vars[outer:]

    def walk_template(self, dot: object, node: TemplateNode) -> None:
        self.node = node
        tree = self.trees.get(node.name)
        if tree is None or tree.root is None:
            raise self.errorf(f"template {go_quote(node.name)} not defined")
        if self.frames + _CALL > FRAME_BUDGET:
            raise self.errorf(f"exceeded maximum template depth ({MAX_DEPTH})")
        value = self.eval_pipeline(dot, node.pipe) if node.pipe is not None else NO_VALUE
        _State(self.trees, tree, self.out, value, self.frames + _CALL).walk(value, tree.root)

    # printing ----------------------------------------------------------------------------
    def print_value(self, node: Node, value: object) -> None:
        cls = type(value)
        if cls is str:
            assert isinstance(value, str)
            self.out.write(value)
        elif cls is int:
            self.out.write(str(value))
        elif cls is TypedInt:
            assert isinstance(value, TypedInt)
            self.out.write(str(value.value))
        elif value is NO_VALUE:
            self.out.write("<no value>")
        else:
            self.out.write(gofmt.format_value(value, "v", gofmt.PLAIN, depth=0))

    # pipelines ---------------------------------------------------------------------------
    def eval_pipeline(self, dot: object, pipe: PipeNode) -> object:
        self.node = pipe
        value: object = _MISSING
        for cmd in pipe.cmds:
            value = self.eval_command(dot, cmd, value)
            if value is None:
                value = NO_VALUE  # a nil interface{} becomes the invalid value
        for var in pipe.decl:
            name = var.idents[0]
            if pipe.is_assign:
                self.set_var(var, name, value)
            else:
                self.vars.append([name, value, False])
        return value

    def set_var(self, node: Node, name: str, value: object) -> None:
        for entry in reversed(self.vars):
            if entry[0] == name:
                entry[1:] = [value, False]
                return
        self.node = node
        raise self.errorf(f"undefined variable: {name}")

    def var_value(self, name: str) -> object:
        return self.var_entry(name)[1]

    def var_entry(self, name: str) -> list[object]:
        for entry in reversed(self.vars):
            if entry[0] == name:
                return entry
        raise self.errorf(f"undefined variable: {name}")

    def not_a_function(self, args: list[Node] | None, final: object) -> None:
        if (args is not None and len(args) > 1) or final is not _MISSING:
            assert args is not None
            raise self.errorf(f"can't give argument to non-function {args[0]}")

    def eval_command(self, dot: object, cmd: CommandNode, final: object) -> object:
        first = cmd.args[0]
        cls = type(first)
        if cls is FieldNode:
            assert isinstance(first, FieldNode)
            self.node = first
            return self.eval_field_chain(dot, dot, first, first.idents, cmd.args, final)
        if cls is VariableNode:
            assert isinstance(first, VariableNode)
            return self.eval_variable(dot, first, cmd.args, final)
        if cls is IdentifierNode:
            assert isinstance(first, IdentifierNode)
            return self.eval_function(dot, first, cmd, cmd.args, final)
        if cls is ChainNode:
            assert isinstance(first, ChainNode)
            return self.eval_chain(dot, first, cmd.args, final)
        if cls is PipeNode:
            assert isinstance(first, PipeNode)
            self.not_a_function(cmd.args, final)
            self.deeper(_PAREN_COMMAND)
            value = self.eval_pipeline(dot, first)
            self.frames -= _PAREN_COMMAND
            return value
        self.node = first
        self.not_a_function(cmd.args, final)
        if cls is BoolNode:
            assert isinstance(first, BoolNode)
            return first.value
        if cls is DotNode:
            return dot
        if cls is NilNode:
            raise self.errorf("nil is not a command")
        if cls is NumberNode:
            assert isinstance(first, NumberNode)
            return self.ideal_constant(first)
        if cls is StringNode:
            assert isinstance(first, StringNode)
            return first.text
        raise self.errorf(f"can't evaluate command {go_quote(str(first))}")

    def ideal_constant(self, node: NumberNode) -> object:
        self.node = node
        text = node.text
        is_hex_int = len(text) > 2 and text[0] == "0" and text[1] in "xX" and not any(c in text for c in "pP")
        if node.is_float and not is_hex_int and text[0] != "'" and any(c in text for c in ".eEpP"):
            return node.as_float
        if node.is_int:
            return node.as_int
        if node.is_uint:
            raise self.errorf(f"{text} overflows int")
        return NO_VALUE

    def eval_chain(self, dot: object, chain: ChainNode, args: list[Node] | None, final: object) -> object:
        self.node = chain
        if isinstance(chain.node, NilNode):
            raise self.errorf(f"indirection through explicit nil in {chain}")
        receiver = self.eval_arg(dot, "value", chain.node)
        return self.eval_field_chain(dot, receiver, chain, chain.fields, args, final)

    def eval_variable(self, dot: object, var: VariableNode, args: list[Node] | None, final: object) -> object:
        self.node = var
        value = self.var_value(var.idents[0])
        if len(var.idents) == 1:
            self.not_a_function(args, final)
            return value
        return self.eval_field_chain(dot, value, var, var.idents[1:], args, final)

    def eval_field_chain(
        self,
        dot: object,
        receiver: object,
        node: Node,
        idents: list[str],
        args: list[Node] | None,
        final: object,
    ) -> object:
        last = len(idents) - 1
        from_map = False
        for i in range(last):
            from_map_next = type(receiver) is dict
            receiver = self.eval_field(idents[i], None, _MISSING, receiver, from_map=from_map)
            from_map = from_map_next
        self.last_from_map = type(receiver) is dict
        return self.eval_field(idents[last], args, final, receiver, from_map=from_map)

    def eval_field(
        self, name: str, args: list[Node] | None, final: object, receiver: object, *, from_map: bool
    ) -> object:
        # Errors here report the node last evaluated, like Go (evalField never moves the position).
        cls = type(receiver)
        has_args = (args is not None and len(args) > 1) or final is not _MISSING
        if cls is GoStruct:
            assert isinstance(receiver, GoStruct)
            for key, value in receiver.fields:
                if key == name:
                    if has_args:
                        raise self.errorf(f"{name} has arguments but cannot be invoked as function")
                    return value
        elif cls is dict:
            assert isinstance(receiver, dict)
            if has_args:
                raise self.errorf(f"{name} is not a method but has arguments")
            return receiver.get(name, NO_VALUE)
        elif receiver is NO_VALUE:
            return NO_VALUE
        elif receiver is None:
            raise self.errorf(f"nil pointer evaluating interface {{}}.{name}")
        # A value looked up in a map[string]interface {} has the static type interface {}.
        static_type = "interface {}" if from_map else type_name(receiver)
        raise self.errorf(f"can't evaluate field {name} in type {static_type}")

    # functions ---------------------------------------------------------------------------
    def eval_function(
        self, dot: object, node: IdentifierNode, cmd: Node, args: list[Node] | None, final: object
    ) -> object:
        self.node = node
        name = node.name
        signature = BUILTIN_SIGNATURES.get(name)
        if signature is None:
            raise self.errorf(f"{go_quote(name)} is not a defined function")
        call_args = args[1:] if args is not None else []
        num_in = len(call_args) + (0 if final is _MISSING else 1)
        num_fixed = len(signature.fixed)
        if signature.variadic is not None:
            if num_in < num_fixed:
                raise self.errorf(
                    f"wrong number of args for {name}: want at least {num_fixed} got {len(call_args)}"
                )
        elif num_in != num_fixed:
            raise self.errorf(f"wrong number of args for {name}: want {num_fixed} got {num_in}")

        if name in ("and", "or"):
            want = name == "or"
            value: object = NO_VALUE
            for arg in call_args:
                value = self.eval_arg(dot, "value", arg)
                if truth(value) == want:
                    return value
            if final is not _MISSING:
                value = self.validate(final, "value")
            return value

        argv: list[object] = []
        for i, arg in enumerate(call_args):
            kind = signature.fixed[i] if i < num_fixed else signature.variadic
            assert kind is not None
            value = self.eval_arg(dot, kind, arg)
            if name == "slice" and i > 0 and self.arg_iface:
                value = InterfaceTyped(value)  # slice does not unwrap its indexes
            argv.append(value)
        if final is not _MISSING:
            position = len(call_args)
            kind = signature.fixed[position] if position < num_fixed else signature.variadic
            assert kind is not None
            argv.append(self.validate(final, kind))
        try:
            return signature.impl(argv)
        except CallError as exc:
            self.node = cmd
            raise self.errorf(f"error calling {name}: {exc}") from None

    def validate(self, value: object, kind: str) -> object:
        if kind == "string":
            if isinstance(value, str):
                return value
            if value is NO_VALUE:
                raise self.errorf("invalid value; expected string")
            got = "interface {}" if value is None else type_name(value)
            raise self.errorf(f"wrong type for value; expected string; got {got}")
        if value is NO_VALUE and kind == "any":
            return None
        return value

    def eval_arg(self, dot: object, kind: str, node: Node) -> object:
        """The argument's value; sets ``arg_iface`` when its static type is interface {}."""
        value = self.eval_arg_value(dot, kind, node)
        cls = type(node)
        iface = False
        if cls is DotNode:
            iface = self.dot_iface
        elif cls is FieldNode or cls is ChainNode:
            iface = self.last_from_map
        elif cls is VariableNode:
            assert isinstance(node, VariableNode)
            iface = bool(self.var_entry(node.idents[0])[2]) if len(node.idents) == 1 else self.last_from_map
        self.arg_iface = iface and value is not NO_VALUE
        return value

    def eval_arg_value(self, dot: object, kind: str, node: Node) -> object:
        self.node = node
        cls = type(node)
        if cls is DotNode:
            return self.validate(dot, kind)
        if cls is NilNode:
            if kind == "string":
                raise self.errorf("cannot assign nil to string")
            return NO_VALUE if kind == "value" else None
        if cls is FieldNode:
            assert isinstance(node, FieldNode)
            return self.validate(self.eval_field_chain(dot, dot, node, node.idents, [node], _MISSING), kind)
        if cls is VariableNode:
            assert isinstance(node, VariableNode)
            return self.validate(self.eval_variable(dot, node, None, _MISSING), kind)
        if cls is PipeNode:
            assert isinstance(node, PipeNode)
            self.deeper(_PAREN_ARG)
            value = self.eval_pipeline(dot, node)
            self.frames -= _PAREN_ARG
            return self.validate(value, kind)
        if cls is IdentifierNode:
            assert isinstance(node, IdentifierNode)
            return self.validate(self.eval_function(dot, node, node, None, _MISSING), kind)
        if cls is ChainNode:
            assert isinstance(node, ChainNode)
            return self.validate(self.eval_chain(dot, node, None, _MISSING), kind)
        if kind == "string":
            if isinstance(node, StringNode):
                return node.text
            raise self.errorf(f"expected string; found {node}")
        if isinstance(node, BoolNode):
            return node.value
        if isinstance(node, NumberNode):
            return self.ideal_constant(node)
        if isinstance(node, StringNode):
            return node.text
        raise self.errorf(f"can't handle assignment of {node} to empty interface argument")


def execute(trees: dict[str, Tree], name: str, data: object, *, limit: int | None = None) -> str:
    """Run the template ``name`` of a parsed set over data; returns the whole output.

    With ``limit``, output longer than that many bytes (UTF-8) stops the run with a GoTemplateError.
    """
    tree = trees.get(name)
    out = _Output(limit)
    dot = NO_VALUE if data is None else data
    if tree is None or tree.root is None:
        raise GoTemplateError(
            f"template: {name}: {go_quote(name)} is an incomplete or empty template", name=name, line=None
        )
    state = _State(trees, tree, out, dot, 0)
    try:
        state.walk(dot, tree.root)
    except OutputTooLarge:
        raise GoOutputTooLarge(
            f"template: {name}: output exceeds the limit of {limit} bytes", name=name, line=None
        ) from None
    except RecursionError:
        # Only a caller already deep in its own stack gets here before MAX_DEPTH: fail the same way.
        raise state.errorf(f"exceeded maximum template depth ({MAX_DEPTH})") from None
    return "".join(out.parts)
