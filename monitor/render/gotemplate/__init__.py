"""Go text/template engine (own parser and evaluator) rendering byte-for-byte like Go's standard library."""

from __future__ import annotations

from monitor.render.gotemplate.errors import GoTemplateError
from monitor.render.gotemplate.executor import execute
from monitor.render.gotemplate.parser import Tree, parse_trees
from monitor.render.gotemplate.values import NO_VALUE, GoSlice, GoStruct, TypedInt

__all__ = [
    "NO_VALUE",
    "GoSlice",
    "GoStruct",
    "GoTemplate",
    "GoTemplateError",
    "TypedInt",
    "parse_go_template",
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
