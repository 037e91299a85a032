"""Command line: argv and environment → Settings; builds the adapters and starts the loop. No decisions here."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from monitor.settings import Settings, format_duration, parse_duration, parse_vips
from monitor.statsconfig import page_from_url, redact_url

ENV_PREFIX = "MONITOR_"
SUBCOMMANDS = ("render", "demo", "probe")
# DATA.json for 5,000 backends is under 1 MiB; the cap only refuses a wrong path quickly.
MAX_DATA_BYTES = 16 * 1024 * 1024


def _env_name(option: str) -> str:
    return ENV_PREFIX + option.lstrip("-").upper().replace("-", "_")


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (1-65535)")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _vips(text: str) -> tuple[str, ...]:
    try:
        return parse_vips(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _stats_url(text: str) -> str:
    if not text:
        return text  # empty: found in the rendered config
    try:
        page_from_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


class _Parser(argparse.ArgumentParser):
    """argparse that takes each option's default from its MONITOR_* environment variable."""

    def add_option(self, *flags: str, help: str, **kwargs: Any) -> None:
        env = _env_name(flags[0])
        if env in os.environ and kwargs.get("action") not in ("store_true", "store_false"):
            raw = os.environ[env]
            convert: Callable[[str], Any] = kwargs.get("type", str)
            try:
                kwargs["default"] = convert(raw)
            except (argparse.ArgumentTypeError, ValueError) as exc:
                self.error(f"{env}={raw!r}: {exc}")
        elif env in os.environ:
            raw = os.environ[env].strip().lower()
            if raw not in ("1", "true", "yes", "0", "false", "no", ""):
                self.error(f"{env}={os.environ[env]!r}: use true or false")
            kwargs["default"] = raw in ("1", "true", "yes")
        shown = kwargs.get("default")
        if isinstance(shown, str):
            shown = redact_url(shown)  # --help must not print a password taken from the environment
        if isinstance(shown, float) and kwargs.get("type") is _duration:
            shown = format_duration(shown)
        suffix = f" [env {env}" + (f"; default {shown}]" if shown not in (None, False, "") else "]")
        self.add_argument(*flags, help=help + suffix, **kwargs)


def build_parser() -> _Parser:
    p = _Parser(
        prog="monitor",
        description="Keep HAProxy's API-server backends equal to the live control plane: watch, render, "
        "validate, write atomically, reload. Also: 'monitor render', 'monitor probe', 'monitor demo'.",
        formatter_class=lambda prog: argparse.HelpFormatter(prog, max_help_position=34, width=120),
    )
    p.add_argument(
        "kubeconfig", nargs="?", type=Path, help="kubeconfig used to reach the API [env MONITOR_KUBECONFIG]"
    )
    p.add_argument(
        "template", nargs="?", type=Path, help="haproxy.cfg template: .tmpl Go text/template, else Jinja2"
    )
    p.add_argument("cfg", nargs="?", type=Path, help="haproxy.cfg to keep up to date [env MONITOR_CFG]")
    p.add_option(
        "--api-vips", type=_vips, default=(), help="API VIPs, comma-separated; the first picks the family"
    )
    p.add_option("--api-vip", type=_vips, default=(), help="deprecated single API VIP (added to --api-vips)")
    p.add_option("--api-port", type=_port, default=Settings.api_port, help="port of each kube-apiserver")
    p.add_option(
        "--lb-port", type=_port, default=Settings.lb_port, help="port HAProxy listens on for API traffic"
    )
    p.add_option(
        "--stat-port", type=_port, default=Settings.stat_port, help="HAProxy stats page port (localhost)"
    )
    p.add_option(
        "--check-interval",
        type=_duration,
        default=Settings.check_interval,
        help="health/steering cycle (Go duration)",
    )
    p.add_option(
        "--reload-socket",
        type=Path,
        default=Settings.reload_socket,
        help="unix socket of HAProxy's reload handler",
    )
    p.add_option(
        "--settle",
        type=_duration,
        default=Settings.settle,
        help="apply a backend change once unchanged this long",
    )
    p.add_option(
        "--settle-max",
        type=_duration,
        default=Settings.settle_max,
        help="apply anyway after this long of constant change",
    )
    p.add_option(
        "--haproxy-bin", default=None, help="HAProxy binary to validate with (default: haproxy on PATH)"
    )
    p.add_option(
        "--source",
        choices=("nodes", "endpointslices"),
        default="nodes",
        help="where API servers are read from",
    )
    p.add_option("--node-selector", default=Settings.node_selector, help="label selector of API nodes")
    p.add_option(
        "--fallback-server", default=Settings.fallback_server, help="API URL used when the primary fails"
    )
    p.add_option(
        "--template-language", choices=("go", "jinja2"), default=None, help="override the template language"
    )
    p.add_option(
        "--control-plane-topology",
        default="",
        help="HighlyAvailableArbiter/DualReplica add a placeholder backend",
    )
    p.add_option("--log-format", choices=("text", "json"), default="text", help="log line format")
    p.add_option(
        "--log-level", choices=("debug", "info", "warning", "error"), default="info", help="log level"
    )
    p.add_option("--once", action="store_true", default=False, help="render, reload if needed, and exit")
    p.add_option(
        "--health-url",
        default=Settings.health_url,
        help="HAProxy health URL polled each cycle",
    )
    p.add_option(
        "--health-on",
        type=_count,
        default=Settings.health_on,
        help="consecutive good checks before steering traffic",
    )
    p.add_option(
        "--health-off",
        type=_count,
        default=Settings.health_off,
        help="consecutive bad checks before removing steering",
    )
    p.add_option("--no-steering", action="store_true", default=False, help="never touch nftables")
    p.add_option("--nft-bin", default=Settings.nft_bin, help="nft binary for steering rules")
    p.add_option(
        "--stats-socket",
        type=Path,
        default=Settings.stats_socket,
        help="HAProxy admin socket for per-server status (default: found in the rendered config)",
    )
    p.add_option(
        "--stats-url",
        type=_stats_url,
        default=Settings.stats_url,
        help="stats page http://[USER:PASS@]HOST:PORT/URI (default: found in the rendered config)",
    )
    p.add_option(
        "--listen", default=Settings.listen, help="HOST:PORT of /healthz /readyz /metrics ('' = off)"
    )
    return p


def settings_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Settings:
    def positional(name: str) -> Path:
        value = getattr(args, name) or (
            Path(os.environ[_env_name(name)]) if _env_name(name) in os.environ else None
        )
        if value is None:
            parser.error(f"missing {name.upper()} (positional argument or {_env_name(name)})")
        return Path(value)

    vips = tuple(dict.fromkeys((*args.api_vips, *args.api_vip)))
    if not vips:
        parser.error("--api-vips is required (or MONITOR_API_VIPS)")
    if args.settle_max < args.settle:
        parser.error("--settle-max must not be shorter than --settle")
    if args.check_interval <= 0:
        parser.error("--check-interval must be positive")
    return Settings(
        kubeconfig=positional("kubeconfig"),
        template=positional("template"),
        cfg=positional("cfg"),
        api_vips=vips,
        api_port=args.api_port,
        lb_port=args.lb_port,
        stat_port=args.stat_port,
        check_interval=args.check_interval,
        reload_socket=args.reload_socket,
        settle=args.settle,
        settle_max=args.settle_max,
        haproxy_bin=args.haproxy_bin,
        source=args.source,
        node_selector=args.node_selector,
        fallback_server=args.fallback_server,
        template_language=args.template_language,
        control_plane_topology=args.control_plane_topology,
        log_format=args.log_format,
        once=args.once,
        health_url=args.health_url,
        health_on=args.health_on,
        health_off=args.health_off,
        steering=not args.no_steering,
        nft_bin=args.nft_bin,
        stats_socket=args.stats_socket,
        stats_url=args.stats_url or None,
        listen=args.listen or None,
    )


def render_main(argv: Sequence[str]) -> int:
    """``monitor render TEMPLATE DATA.json``: print the rendering to stdout."""
    from monitor.boundedread import read_bounded
    from monitor.render import Renderer, RenderError
    from monitor.render.data import lbconfig_from_json

    p = argparse.ArgumentParser(
        prog="monitor render", description="Render TEMPLATE for the LBConfig in DATA.json."
    )
    p.add_argument("template", type=Path, help="template file (.tmpl = Go text/template, else Jinja2)")
    p.add_argument(
        "data",
        type=Path,
        help="JSON: {ApiPort, LbPort, StatPort, FrontendAddr, Backends:[{Host,Address,Port}]}",
    )
    p.add_argument(
        "--template-language", choices=("go", "jinja2"), default=None, help="override the language"
    )
    args = p.parse_args(argv)
    try:
        raw = json.loads(read_bounded(args.data, limit=MAX_DATA_BYTES))
    except OSError as exc:
        print(f"monitor render: {args.data}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"monitor render: {args.data}: invalid JSON: {exc}", file=sys.stderr)
        return 1
    try:
        config = lbconfig_from_json(raw, source=str(args.data))
    except ValueError as exc:
        print(f"monitor render: {exc}", file=sys.stderr)
        return 1
    try:
        text = Renderer(args.template, language=args.template_language).render(config)
    except RenderError as exc:
        print(f"monitor render: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "probe":
        from monitor.probe import main as probe_main  # light: keepalived runs it every two seconds

        return probe_main(argv[1:])
    if argv and argv[0] == "render":
        return render_main(argv[1:])
    if argv and argv[0] == "demo":
        from monitor.testbed.demo import main as demo_main

        return demo_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    settings = settings_from_args(args, parser)
    from monitor import logs
    from monitor.app import run

    logs.setup(fmt=settings.log_format, level=args.log_level)
    return run(settings)
