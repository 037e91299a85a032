"""The one frozen Settings object, and parsing of Go-style durations and VIP lists."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Parse a Go duration (``6s``, ``500ms``, ``1m30s``, ``1.5h``) into seconds.

    A bare number is taken as seconds, for convenience in environment variables. Negative durations are refused.
    """
    s = text.strip()
    if not s:
        raise ValueError("empty duration")
    try:
        value = float(s)
    except ValueError:
        pass
    else:
        if value < 0:
            raise ValueError(f"negative duration {text!r}")
        return value
    if s.startswith("-"):
        raise ValueError(f"negative duration {text!r}")
    s = s.removeprefix("+")
    if s == "0":
        return 0.0
    pos = 0
    total = 0.0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if not m:
            raise ValueError(f"invalid duration {text!r} (use Go style such as 6s, 500ms, 1m)")
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    return total


def format_duration(seconds: float) -> str:
    """Render seconds the short way Go would for the values we print (``6s``, ``1.5s``, ``500ms``)."""
    if seconds and seconds < 1:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"


def parse_vips(text: str) -> tuple[str, ...]:
    """Parse a comma-separated VIP list, normalising each address; raises ValueError naming the bad one."""
    vips: list[str] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            vips.append(str(ipaddress.ip_address(part)))
        except ValueError:
            raise ValueError(f"{part!r} is not an IP address") from None
    return tuple(vips)


Source = Literal["nodes", "endpointslices"]
LogFormat = Literal["text", "json"]


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Every knob of the main job; built once by the CLI and never mutated."""

    kubeconfig: Path
    template: Path
    cfg: Path
    api_vips: tuple[str, ...]
    api_port: int = 6443
    lb_port: int = 9445
    stat_port: int = 29445
    check_interval: float = 6.0
    reload_socket: Path = Path("/var/run/haproxy/haproxy-master.sock")
    settle: float = 1.5
    settle_max: float = 10.0
    haproxy_bin: str | None = None
    source: Source = "nodes"
    node_selector: str = "node-role.kubernetes.io/master="
    fallback_server: str = "https://localhost:6443"
    template_language: Literal["go", "jinja2"] | None = None
    control_plane_topology: str = ""
    log_format: LogFormat = "text"
    once: bool = False
    # Health, steering, status (issue: health, VIP steering, probes and observability).
    health_url: str = "http://127.0.0.1:9454/haproxy_monitor"
    health_on: int = 3
    health_off: int = 11
    steering: bool = True
    nft_bin: str = "nft"
    # None: found in the rendered config (its admin socket if we can open it, else its stats page).
    stats_socket: Path | None = None
    stats_url: str | None = None
    listen: str | None = "127.0.0.1:9448"

    @property
    def relist_interval(self) -> float:
        """A full relist every check interval × 50 is the safety net behind the watch."""
        return self.check_interval * 50
