"""Plain immutable data shared by every stage: backends, the LB config and its template view."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, order=True)
class Backend:
    """One API server as HAProxy sees it: ``server HOST ADDRESS:PORT``."""

    host: str
    address: str
    port: int


@dataclass(frozen=True)
class LBConfig:
    """Everything a template may read; field names in templates follow the reference (``LBConfig.ApiPort``)."""

    api_port: int
    lb_port: int
    stat_port: int
    frontend_addr: str = ""
    backends: tuple[Backend, ...] = field(default_factory=tuple)

    def template_data(self) -> dict[str, Any]:
        """The data given to templates, with the reference's names, as plain dicts, lists and ints."""
        return {
            "LBConfig": {
                "ApiPort": self.api_port,
                "LbPort": self.lb_port,
                "StatPort": self.stat_port,
                "FrontendAddr": self.frontend_addr,
                "Backends": [{"Host": b.host, "Address": b.address, "Port": b.port} for b in self.backends],
            }
        }

    @classmethod
    def from_json_data(cls, data: Any, *, source: str = "data") -> LBConfig:
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
        return cls(
            api_port=port("ApiPort", data, ""),
            lb_port=port("LbPort", data, ""),
            stat_port=port("StatPort", data, ""),
            frontend_addr=frontend,
            backends=tuple(backends),
        )


@dataclass(frozen=True)
class ServerState:
    """One HAProxy server as its statistics show it: what the state-change log and /metrics report."""

    proxy: str
    server: str
    status: str  # UP, DOWN, "UP 1/3", MAINT, "no check", ...
    check_status: str  # L7OK, L4CON, INI, ...
    sessions: int  # current sessions

    @property
    def is_up(self) -> bool:
        """UP, including transitional "UP 1/3" states (HAProxy still sends traffic), or not checked at all."""
        return self.status.startswith("UP") or self.status == "no check"
