"""What HAProxy should serve: the API objects through discovery to an LB config, never an empty set in place of
a served one."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from monitor import discovery
from monitor.model import LBConfig
from monitor.settings import Settings


class DiscoveryReport(Protocol):
    """The loop's reporting of what discovery found (monitor.loop.Report)."""

    def discovered(self, warnings: Sequence[str]) -> None: ...

    def backends_listed(self, count: int, *, kept: int) -> None: ...

    def local_addresses_failed(self, error: Exception) -> None: ...


def desired_config(
    objects: Sequence[Mapping[str, Any]], settings: Settings, *, local: Sequence[discovery.IPInterface]
) -> tuple[LBConfig, tuple[str, ...]]:
    """The LB config the API objects call for, and discovery's warnings (``local``: this host's addresses)."""
    s = settings
    if s.source == "endpointslices":
        found = discovery.backends_from_endpointslices(
            objects, vips=s.api_vips, api_port=s.api_port, topology=s.control_plane_topology
        )
    else:
        found = discovery.backends_from_nodes(
            objects,
            vips=s.api_vips,
            api_port=s.api_port,
            local_addresses=local,
            topology=s.control_plane_topology,
        )
    config = discovery.lbconfig(
        found.backends, vips=s.api_vips, api_port=s.api_port, lb_port=s.lb_port, stat_port=s.stat_port
    )
    return config, found.warnings


class BackendSet:
    """The latest API objects and the last non-empty backend set they gave.

    No control plane has zero API servers while one answers us, so an empty set never replaces a served one;
    only the very first set may be empty (there is nothing to keep).
    """

    def __init__(self, settings: Settings, networks: Callable[[], Sequence[discovery.IPInterface]]) -> None:
        self._settings, self._networks = settings, networks
        self._objects: tuple[Mapping[str, Any], ...] | None = None
        self._listed: LBConfig | None = None

    def update(self, objects: tuple[Mapping[str, Any], ...], report: DiscoveryReport) -> LBConfig | None:
        """The config the new objects call for, or None when it must not be offered (an empty set)."""
        self._objects = objects
        local: Sequence[discovery.IPInterface] = []
        if self._settings.source == "nodes":
            try:
                local = self._networks()
            except Exception as exc:  # the adapter's own error type; go on as a host without the VIP's subnet
                report.local_addresses_failed(exc)
        config, warnings = desired_config(objects, self._settings, local=local)
        report.discovered(warnings)
        if self._listed is not None:
            report.backends_listed(len(config.backends), kept=len(self._listed.backends))
            if not config.backends:
                return None
        if config.backends:
            self._listed = config
        return config
