"""What templates read: an LBConfig as Jinja2's plain data and as Go's typed values, and the JSON form back.

All three speak the reference's names (``LBConfig.ApiPort``, ``Backends[].Host``, ...), so they live
together: a template written for one engine reads the same fields with the other.
"""

from __future__ import annotations

from typing import Any

from monitor.model import Backend, LBConfig
from monitor.render.gotemplate import GoSlice, GoStruct, TypedInt


def jinja_data(lbconfig: LBConfig) -> dict[str, Any]:
    """The data given to Jinja2 templates, with the reference's names, as plain dicts, lists and ints."""
    return {
        "LBConfig": {
            "ApiPort": lbconfig.api_port,
            "LbPort": lbconfig.lb_port,
            "StatPort": lbconfig.stat_port,
            "FrontendAddr": lbconfig.frontend_addr,
            "Backends": [{"Host": b.host, "Address": b.address, "Port": b.port} for b in lbconfig.backends],
        }
    }


def go_data(lbconfig: LBConfig) -> GoStruct:
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


def lbconfig_from_json(data: Any, *, source: str = "data") -> LBConfig:
    """Build from the JSON form used by ``monitor render`` (the LBConfig object, bare or under "LBConfig").

    Raises ValueError naming the offending field.
    """
    if isinstance(data, dict) and "LBConfig" in data:
        data = data["LBConfig"]
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a JSON object with ApiPort, LbPort, StatPort, Backends")

    def port(name: str, obj: dict[str, Any], where: str) -> int:
        value = obj.get(name, 0)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 65535:
            raise ValueError(f"{source}: {where}{name} must be an integer 0-65535, got {value!r}")
        return value

    backends_raw = data.get("Backends", []) or []
    if not isinstance(backends_raw, list):
        raise ValueError(f"{source}: Backends must be a list")
    backends = []
    for i, b in enumerate(backends_raw):
        if not isinstance(b, dict):
            raise ValueError(f"{source}: Backends[{i}] must be an object with Host, Address, Port")
        for key in ("Host", "Address"):
            if not isinstance(b.get(key, ""), str):
                raise ValueError(f"{source}: Backends[{i}].{key} must be a string")
        backends.append(
            Backend(
                host=b.get("Host", ""),
                address=b.get("Address", ""),
                port=port("Port", b, f"Backends[{i}]."),
            )
        )
    frontend = data.get("FrontendAddr", "")
    if not isinstance(frontend, str):
        raise ValueError(f"{source}: FrontendAddr must be a string")
    return LBConfig(
        api_port=port("ApiPort", data, ""),
        lb_port=port("LbPort", data, ""),
        stat_port=port("StatPort", data, ""),
        frontend_addr=frontend,
        backends=tuple(backends),
    )
