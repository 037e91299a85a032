"""Plain immutable data shared by every stage: the backends and the LB config templates are rendered from."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, order=True)
class Backend:
    """One API server as HAProxy sees it: ``server HOST ADDRESS:PORT``."""

    host: str
    address: str
    port: int


@dataclass(frozen=True)
class LBConfig:
    """Everything a template may read; ``monitor.render.data`` gives it the reference's names (``LBConfig.ApiPort``)."""

    api_port: int
    lb_port: int
    stat_port: int
    frontend_addr: str = ""
    backends: tuple[Backend, ...] = field(default_factory=tuple)


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
