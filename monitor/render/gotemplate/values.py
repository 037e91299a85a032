"""The Go value model used by the template engine: kinds, typed integers, structs, typed slices.

Mapping from Python: ``str`` is a Go string, ``bool`` bool, ``int`` Go ``int``, ``float`` float64,
``dict`` ``map[string]interface {}``, ``list`` ``[]interface {}``, ``None`` a nil interface (a map or
slice element holding nil). :data:`NO_VALUE` is Go's invalid ``reflect.Value`` (a missing map key,
an empty pipeline), which prints as ``<no value>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final


class _NoValue:
    """Go's invalid reflect.Value: not nil, not a value; a singleton."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_VALUE"


NO_VALUE: Final = _NoValue()

_INT_RANGES: Final = {
    "int": (-(1 << 63), (1 << 63) - 1),
    "int8": (-(1 << 7), (1 << 7) - 1),
    "int16": (-(1 << 15), (1 << 15) - 1),
    "int32": (-(1 << 31), (1 << 31) - 1),
    "int64": (-(1 << 63), (1 << 63) - 1),
    "uint": (0, (1 << 64) - 1),
    "uint8": (0, (1 << 8) - 1),
    "uint16": (0, (1 << 16) - 1),
    "uint32": (0, (1 << 32) - 1),
    "uint64": (0, (1 << 64) - 1),
}


@dataclass(frozen=True, slots=True)
class TypedInt:
    """An integer of a sized Go type (``uint16`` ports, ``uint8`` bytes from indexing a string)."""

    value: int
    type_name: str

    def __post_init__(self) -> None:
        low, high = _INT_RANGES[self.type_name]
        if not low <= self.value <= high:
            raise ValueError(f"{self.value} does not fit in {self.type_name}")

    @property
    def unsigned(self) -> bool:
        return self.type_name.startswith("u")


@dataclass(frozen=True, slots=True)
class GoStruct:
    """A Go struct value: its type name (``main.Backend``) and exported fields in declaration order."""

    type_name: str
    fields: tuple[tuple[str, object], ...]

    def get(self, name: str) -> object:
        for key, value in self.fields:
            if key == name:
                return value
        return NO_VALUE


@dataclass(frozen=True, slots=True)
class InterfaceTyped:
    """An argument whose static Go type is ``interface {}`` (read from a map or ``[]interface {}``).

    Only ``slice`` sees it: Go's slice, unlike index, does not unwrap its indexes, so such an index is
    refused whatever it holds.
    """

    value: object


@dataclass(frozen=True, slots=True)
class GoSlice:
    """A slice with a concrete element type (``[]main.Backend``); ``nil`` marks a nil slice."""

    elem_type: str
    items: Sequence[object]
    nil: bool = False


def type_name(value: object) -> str:
    """The Go type of a value as ``%T`` prints it."""
    if value is None or value is NO_VALUE:
        return "<nil>"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, TypedInt):
        return value.type_name
    if isinstance(value, GoStruct):
        return value.type_name
    if isinstance(value, GoSlice):
        return "[]" + value.elem_type
    if isinstance(value, list):
        return "[]interface {}"
    if isinstance(value, dict):
        return "map[string]interface {}"
    return type(value).__name__


def go_len_str(value: str) -> int:
    """Length of a Go string in bytes."""
    return len(value.encode("utf-8", "surrogateescape"))
