"""The templates shipped inside the package (monitor/templates/), read through importlib.resources."""

from __future__ import annotations

from importlib import resources


def template_names() -> list[str]:
    """The shipped templates' file names, sorted."""
    return sorted(
        entry.name
        for entry in resources.files("monitor").joinpath("templates").iterdir()
        if entry.is_file() and not entry.name.startswith(".")
    )


def template_text(name: str) -> str:
    """One shipped template's text; an unknown name is a ValueError that lists the known ones."""
    if name not in template_names():
        raise ValueError(f"no shipped template {name!r}; shipped: {', '.join(template_names())}")
    return resources.files("monitor").joinpath("templates", name).read_text(encoding="utf-8")
