"""What a well-formed list, watch event, Node and EndpointSlice look like: an answer that is not one is an error.

Only the fields the adapter and the address rules read are checked, each for the JSON type the API
defines (null counts as absent, as Go decodes it). Everything downstream may then trust those types.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from monitor.adapters.kube.errors import Malformed

# A spec: a type (the value's JSON type), [spec] (a list of those), {str: spec} (a map with any keys),
# or {"field": spec, ...} (an object with these optional fields).
Spec = Any

_STRING_MAP: Spec = {str: str}
_METADATA: Spec = {
    "name": str,
    "namespace": str,
    "resourceVersion": str,
    "labels": _STRING_MAP,
    "annotations": _STRING_MAP,
}
OBJECT_SPECS: dict[str, Spec] = {
    "/api/v1/nodes": {
        "metadata": _METADATA,
        "status": {"addresses": [{"type": str, "address": str}]},
    },
    "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices": {
        "metadata": _METADATA,
        "addressType": str,
        "endpoints": [{"addresses": [str], "conditions": {"ready": bool}, "nodeName": str, "hostname": str}],
    },
}
_ANY_OBJECT: Spec = {"metadata": _METADATA}
_STATUS: Spec = {"code": int, "message": str}
_LIST_METADATA: Spec = {"resourceVersion": str}

_TYPE_NAMES = {str: "a string", bool: "true or false", int: "a number", float: "a number"}


def check_list(body: Mapping[str, Any], *, path: str, where: str) -> list[dict[str, Any]]:
    """The items of a list body of *path*, each a well-formed object; raises Malformed naming the first fault."""
    problem = _problem(body.get("metadata"), _LIST_METADATA, "metadata")
    if problem is not None:
        raise Malformed(f"{where}: list answer: {problem}")
    items = body.get("items")
    if not isinstance(items, list):
        # A real list always has items, [] when nothing matches: no items is not "no objects".
        problem = "it has no items" if items is None else f"items is {_what(items)}, not a list"
        raise Malformed(f"{where}: list answer: {problem}")
    return [
        check_object(item, path=path, where=f"{where}: list answer: items[{i}]")
        for i, item in enumerate(items)
    ]


def check_object(obj: Any, *, path: str, where: str, spec: Spec = None) -> dict[str, Any]:
    """*obj* if it is a well-formed object of *path* with a name; raises Malformed otherwise."""
    if not isinstance(obj, dict):
        raise Malformed(f"{where} is {_what(obj)}, not an object")
    problem = _problem(obj, spec or OBJECT_SPECS.get(path, _ANY_OBJECT), "")
    meta = obj.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    if problem is None and not name:
        problem = "metadata.name is missing"
    if problem is not None:
        label = f" ({name})" if isinstance(name, str) and name else ""
        raise Malformed(f"{where}{label}: {problem}")
    return obj


def check_bookmark(obj: Any, *, where: str) -> dict[str, Any]:
    """A BOOKMARK event's object: it has no name, only its metadata.resourceVersion counts."""
    return _checked(obj, _ANY_OBJECT, where=where)


def check_status(obj: Any, *, where: str) -> dict[str, Any]:
    """An ERROR event's object: a Status with a code and a message."""
    return _checked(obj, _STATUS, where=where)


def _checked(obj: Any, spec: Spec, *, where: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise Malformed(f"{where} is {_what(obj)}, not an object")
    problem = _problem(obj, spec, "")
    if problem is not None:
        raise Malformed(f"{where}: {problem}")
    return obj


def _problem(value: Any, spec: Spec, at: str) -> str | None:
    """What is wrong with *value* as *spec* says, at field path *at*; None when nothing is."""
    if value is None:
        return None
    if isinstance(spec, type):
        if isinstance(value, spec) and not (spec is int and isinstance(value, bool)):
            return None
        return f"{at or 'the object'} is {_what(value)}, not {_TYPE_NAMES.get(spec, spec.__name__)}"
    if isinstance(spec, list):
        if not isinstance(value, list):
            return f"{at} is {_what(value)}, not a list"
        for i, element in enumerate(value):
            problem = _problem(element, spec[0], f"{at}[{i}]")
            if problem is not None:
                return problem
        return None
    if not isinstance(value, dict):
        return f"{at or 'the object'} is {_what(value)}, not an object"
    if str in spec:
        for key, element in value.items():
            problem = _problem(element, spec[str], f"{at}[{key!r}]")
            if problem is not None:
                return problem
        return None
    for key, sub in spec.items():
        problem = _problem(value.get(key), sub, f"{at}.{key}" if at else key)
        if problem is not None:
            return problem
    return None


def _what(value: Any) -> str:
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return "null"
