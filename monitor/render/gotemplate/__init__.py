"""Go text/template engine (own parser and evaluator) rendering byte-for-byte like Go's standard library."""

from __future__ import annotations

from typing import TYPE_CHECKING

from monitor.render.gotemplate.errors import GoTemplateError
from monitor.render.gotemplate.executor import execute
from monitor.render.gotemplate.parser import Tree, parse_trees
from monitor.render.gotemplate.values import NO_VALUE, GoSlice, GoStruct, TypedInt

if TYPE_CHECKING:
    from monitor.model import LBConfig

__all__ = [
    "NO_VALUE",
    "GoSlice",
    "GoStruct",
    "GoTemplate",
    "GoTemplateError",
    "TypedInt",
    "lbconfig_value",
    "parse_go_template",
    "render_lbconfig",
]


class GoTemplate:
    """A parsed template set; :meth:`execute` runs the template named at parse time."""

    def __init__(self, name: str, trees: dict[str, Tree]) -> None:
        self.name = name
        self._trees = trees

    def execute(self, data: object) -> str:
        """Render with Go semantics; raises GoTemplateError (no partial output is returned)."""
        return execute(self._trees, self.name, data)


def parse_go_template(source: str, *, name: str) -> GoTemplate:
    """Parse Go text/template source; raises GoTemplateError naming the template and line."""
    return GoTemplate(name, parse_trees(source, name=name))


def lbconfig_value(lbconfig: LBConfig) -> GoStruct:
    """The reference's data as typed Go values: a root struct whose ``LBConfig`` field has uint16 ports."""
    backends = GoSlice(
        "main.Backend",
        [
            GoStruct(
                "main.Backend",
                (("Host", b.host), ("Address", b.address), ("Port", TypedInt(b.port, "uint16"))),
            )
            for b in lbconfig.backends
        ],
        # The reference builds Backends by appending to a nil slice: no backends means nil.
        nil=not lbconfig.backends,
    )
    config = GoStruct(
        "main.ApiLBConfig",
        (
            ("ApiPort", TypedInt(lbconfig.api_port, "uint16")),
            ("LbPort", TypedInt(lbconfig.lb_port, "uint16")),
            ("StatPort", TypedInt(lbconfig.stat_port, "uint16")),
            ("Backends", backends),
            ("FrontendAddr", lbconfig.frontend_addr),
        ),
    )
    return GoStruct("main.Root", (("LBConfig", config),))


def render_lbconfig(source: str, lbconfig: LBConfig, *, name: str) -> str:
    """Parse and render in one call, with struct semantics equal to the reference's Go types.

    Long-lived callers (the main loop) parse once with :func:`parse_go_template` and call
    ``execute(lbconfig_value(...))`` instead.
    """
    return parse_go_template(source, name=name).execute(lbconfig_value(lbconfig))
