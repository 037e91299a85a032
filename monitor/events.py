"""The loop's inputs: every observation an adapter or signal handler posts to the main loop's queue."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from monitor.model import ServerState


@dataclass(frozen=True)
class Objects:
    """The full current set of API objects (Nodes or EndpointSlices), posted after a list and after every change."""

    items: tuple[Mapping[str, Any], ...]
    server: str = ""
    fallback: bool = False


@dataclass(frozen=True)
class Connectivity:
    """Posted by the watcher when reachability, fallback or the error changes (not on every retry)."""

    reachable: bool
    fallback: bool
    server: str
    error: str | None


@dataclass(frozen=True)
class TemplateChanged:
    path: str = ""


@dataclass(frozen=True)
class HealthObserved:
    ok: bool
    reason: str = ""


@dataclass(frozen=True)
class StatsObserved:
    """One read of HAProxy's statistics: every server's state, or why no source answered."""

    servers: tuple[ServerState, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class Stop:
    reason: str = "signal"


Event = Objects | Connectivity | TemplateChanged | HealthObserved | StatsObserved | Stop
