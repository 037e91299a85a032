"""What a request selects: label and field selectors, and the query that a list, a get or a watch answers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from monitor.testbed.apiserver.objects import Obj


class SelectorError(ValueError):
    """A label or field selector the simulator does not understand."""


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "exists", "!exists"
    value: str = ""

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.op == "exists":
            return self.key in labels
        if self.op == "!exists":
            return self.key not in labels
        if self.op == "=":
            return labels.get(self.key) == self.value
        return labels.get(self.key) != self.value


def parse_selector(text: str) -> tuple[Requirement, ...]:
    """Parse the equality-based selector forms ``k=v``, ``k==v``, ``k!=v``, ``k=``, ``k``, ``!k``; comma = AND."""
    reqs: list[Requirement] = []
    for raw in text.split(","):
        term = raw.strip()
        if not term:
            continue
        if "(" in term or " in " in term or " notin " in term:
            raise SelectorError(f"unsupported set-based selector term {term!r}")
        if term.startswith("!"):
            reqs.append(Requirement(term[1:].strip(), "!exists"))
        elif "!=" in term:
            key, value = term.split("!=", 1)
            reqs.append(Requirement(key.strip(), "!=", value.strip()))
        elif "=" in term:
            key, value = term.split("==", 1) if "==" in term else term.split("=", 1)
            reqs.append(Requirement(key.strip(), "=", value.strip()))
        else:
            reqs.append(Requirement(term, "exists"))
        if not reqs[-1].key:
            raise SelectorError(f"selector term {term!r} has no key")
    return tuple(reqs)


def _selector_matches(reqs: Sequence[Requirement], labels: Mapping[str, str]) -> bool:
    return all(r.matches(labels) for r in reqs)


def field_selector_name(text: str) -> str | None:
    """The name a field selector asks for (only ``metadata.name=NAME`` is understood), or None."""
    name = None
    for term in filter(None, (t.strip() for t in text.split(","))):
        key, sep, value = term.partition("=")
        if not sep or key.strip() != "metadata.name":
            raise SelectorError(f"unsupported field selector {term!r} (only metadata.name=NAME)")
        name = value.lstrip("=").strip()
    return name


@dataclass(frozen=True)
class Query:
    resource: str
    namespace: str | None
    name: str | None
    labels: tuple[Requirement, ...]
    field_name: str | None

    def matches(self, obj: Obj | None) -> bool:
        if obj is None:
            return False
        meta = obj["metadata"]
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        if self.field_name is not None and meta["name"] != self.field_name:
            return False
        return _selector_matches(self.labels, meta.get("labels") or {})
