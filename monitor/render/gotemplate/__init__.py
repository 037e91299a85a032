"""Go text/template engine (own parser and evaluator) rendering byte-for-byte like Go's standard library."""

from __future__ import annotations

from monitor.render.gotemplate.errors import GoOutputTooLarge, GoTemplateError
from monitor.render.gotemplate.executor import execute
from monitor.render.gotemplate.parser import Tree, parse_trees
from monitor.render.gotemplate.values import NO_VALUE, GoSlice, GoStruct, TypedInt

__all__ = [
    "NO_VALUE",
    "GoOutputTooLarge",
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

    def execute(self, data: object, *, limit: int | None = None) -> str:
        """Render with Go semantics; raises GoTemplateError (no partial output is returned).

        ``limit`` caps the output in bytes (UTF-8); Go has no such cap, a config file needs one.
        """
        try:
            return execute(self._trees, self.name, data, limit=limit)
        except GoTemplateError:
            raise
        except Exception as exc:
            raise _unexpected(self.name, "execute", exc) from exc


def parse_go_template(source: str, *, name: str) -> GoTemplate:
    """Parse Go text/template source; raises GoTemplateError naming the template and line."""
    try:
        return GoTemplate(name, parse_trees(source, name=name))
    except GoTemplateError:
        raise
    except RecursionError:
        # Only a caller already deep in its own stack gets here before the parser's own depth cap.
        raise GoTemplateError(f"template: {name}: max nesting depth exceeded", name=name, line=None) from None
    except Exception as exc:
        raise _unexpected(name, "parse", exc) from exc


def _unexpected(name: str, what: str, exc: Exception) -> GoTemplateError:
    # Callers handle GoTemplateError only: any other exception is a bug here, reported, never a crash there.
    detail = " ".join(str(exc).split())
    return GoTemplateError(
        f"template: {name}: cannot {what}: internal error {type(exc).__name__}: {detail}",
        name=name,
        line=None,
    )
