"""The one frozen Settings object, each field declared once with its option; parsing of option values."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from monitor.statsconfig import page_from_url, redact_url

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


def parse_port(text: str) -> int:
    """A TCP port, 1-65535."""
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a port number") from None
    if not 1 <= value <= 65535:
        raise ValueError(f"{value} is not a port number (1-65535)")
    return value


def parse_count(text: str) -> int:
    """A whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise ValueError(f"{value} must be at least 1")
    return value


def parse_rate(text: str) -> float:
    """A positive number of requests per second."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise ValueError(f"{text} must be a positive number")
    return value


def parse_stats_url(text: str) -> str | None:
    """A stats page URL checked now, so that a typo is a usage error; empty: none (found in the config)."""
    if not text:
        return None
    page_from_url(text)  # its ValueError names the URL without the password
    return text


def parse_listen(text: str) -> str | None:
    """HOST:PORT to serve on; empty turns the endpoint off."""
    return text or None


@dataclass(frozen=True, kw_only=True)
class Option:
    """How one Settings field is given: flag ``--<field-name>`` (or a positional) and ``MONITOR_<FIELD_NAME>``.

    The rest comes from the field itself: a bool field is a switch that flips its default, a Literal field takes
    its choices from the type, a field without a default is required.
    """

    help: str
    parse: Callable[[str], Any] = str  # raises ValueError whose text names the value
    show: Callable[[Any], str] = str  # a value as --help (and so the README) prints it
    flag: str = ""  # when not --<field-name>
    positional: bool = False
    default_text: str = ""  # the documented default when the value does not say it ("haproxy on PATH")
    alias: str = ""  # a deprecated flag whose values are added to this one's
    alias_help: str = ""


def option(
    help: str,
    *,
    parse: Callable[[str], Any] = str,
    show: Callable[[Any], str] = str,
    flag: str = "",
    positional: bool = False,
    default_text: str = "",
    alias: str = "",
    alias_help: str = "",
) -> Mapping[str, Option]:
    """The field metadata that declares a Settings field's option (see Option)."""
    how = Option(
        help=help,
        parse=parse,
        show=show,
        flag=flag,
        positional=positional,
        default_text=default_text,
        alias=alias,
        alias_help=alias_help,
    )
    return {"option": how}


Source = Literal["nodes", "endpointslices"]
TemplateLanguage = Literal["go", "jinja2"]
LogFormat = Literal["text", "json"]
LogLevel = Literal["debug", "info", "warning", "error"]
_DURATION: dict[str, Any] = {"parse": parse_duration, "show": format_duration}
_FOUND_IN_CONFIG = "found in the config"


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Every knob of the main job; built once by the CLI and never mutated.

    Each field declares its own option (flag, environment variable, parser, help, default), from which the CLI
    builds its parser and ``--help``; the README's options table is checked against it by the tests.
    """

    kubeconfig: Path = field(metadata=option("kubeconfig used to reach the API", parse=Path, positional=True))
    template: Path = field(
        metadata=option(
            "haproxy.cfg template: .tmpl Go text/template, else Jinja2", parse=Path, positional=True
        )
    )
    cfg: Path = field(metadata=option("haproxy.cfg to keep up to date", parse=Path, positional=True))
    api_vips: tuple[str, ...] = field(
        metadata=option(
            "API VIPs, comma-separated; the first picks the family",
            parse=parse_vips,
            show=",".join,
            alias="--api-vip",
            alias_help="deprecated single API VIP (added to --api-vips)",
        )
    )
    api_port: int = field(default=6443, metadata=option("port of each kube-apiserver", parse=parse_port))
    lb_port: int = field(
        default=9445, metadata=option("port HAProxy listens on for API traffic", parse=parse_port)
    )
    stat_port: int = field(
        default=29445, metadata=option("HAProxy stats page port (localhost)", parse=parse_port)
    )
    check_interval: float = field(
        default=6.0, metadata=option("health/steering cycle (Go duration)", **_DURATION)
    )
    reload_socket: Path = field(
        default=Path("/var/run/haproxy/haproxy-master.sock"),
        metadata=option("unix socket of HAProxy's reload handler", parse=Path),
    )
    settle: float = field(
        default=1.5, metadata=option("apply a backend change once unchanged this long", **_DURATION)
    )
    settle_max: float = field(
        default=10.0, metadata=option("apply anyway after this long of constant change", **_DURATION)
    )
    runtime_changes: bool = field(
        default=True,
        metadata=option(
            "always reload; never change servers over HAProxy's admin socket", flag="--no-runtime-changes"
        ),
    )
    runtime_socket: Path | None = field(
        default=None,
        metadata=option(
            "HAProxy admin socket for runtime server changes",
            parse=Path,
            default_text="the config's stats socket … level admin",
        ),
    )
    drain_timeout: float = field(
        default=10.0,
        metadata=option("a removed server's sessions may finish this long before they are cut", **_DURATION),
    )
    haproxy_bin: str | None = field(
        default=None, metadata=option("HAProxy binary to validate with", default_text="haproxy on PATH")
    )
    source: Source = field(default="nodes", metadata=option("where API servers are read from"))
    node_selector: str = field(
        default="node-role.kubernetes.io/master=", metadata=option("label selector of API nodes")
    )
    fallback_server: str = field(
        default="https://localhost:6443", metadata=option("API URL used when the primary fails")
    )
    kube_api_qps: float = field(
        default=1.0,
        metadata=option("API requests per second on average (every retry path)", parse=parse_rate),
    )
    kube_api_burst: int = field(default=3, metadata=option("API requests at once", parse=parse_count))
    template_language: TemplateLanguage | None = field(
        default=None, metadata=option("override the template language", default_text="by extension")
    )
    control_plane_topology: str = field(
        default="", metadata=option("HighlyAvailableArbiter/DualReplica add a placeholder backend")
    )
    log_format: LogFormat = field(default="text", metadata=option("log line format"))
    log_level: LogLevel = field(default="info", metadata=option("log level"))
    once: bool = field(default=False, metadata=option("render, reload if needed, and exit"))
    # Health, steering, status (issue: health, VIP steering, probes and observability).
    health_url: str = field(
        default="http://127.0.0.1:9454/haproxy_monitor",
        metadata=option("HAProxy health URL polled each cycle"),
    )
    health_on: int = field(
        default=3, metadata=option("consecutive good checks before steering traffic", parse=parse_count)
    )
    health_off: int = field(
        default=11, metadata=option("consecutive bad checks before removing steering", parse=parse_count)
    )
    steering: bool = field(default=True, metadata=option("never touch nftables", flag="--no-steering"))
    nft_bin: str = field(default="nft", metadata=option("nft binary for steering rules"))
    # None: found in the rendered config (its admin socket if we can open it, else its stats page).
    stats_socket: Path | None = field(
        default=None,
        metadata=option(
            "HAProxy admin socket for per-server status", parse=Path, default_text=_FOUND_IN_CONFIG
        ),
    )
    stats_url: str | None = field(
        default=None,
        metadata=option(
            "stats page http://[USER:PASS@]HOST:PORT/URI",
            parse=parse_stats_url,
            show=redact_url,  # --help must not print a password taken from the environment
            default_text=_FOUND_IN_CONFIG,
        ),
    )
    listen: str | None = field(
        default="127.0.0.1:9448",
        metadata=option("HOST:PORT of /healthz /readyz /metrics ('' = off)", parse=parse_listen),
    )

    def __post_init__(self) -> None:
        # Checks across fields; the CLI reports them as usage errors.
        if self.settle_max < self.settle:
            raise ValueError("--settle-max must not be shorter than --settle")
        if self.check_interval <= 0:
            raise ValueError("--check-interval must be positive")

    @property
    def relist_interval(self) -> float:
        """A full relist every check interval × 50 is the safety net behind the watch."""
        return self.check_interval * 50
