"""Command line: argv and environment → Settings; builds the adapters and starts the loop. No decisions here."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import gc
import json
import os
import re
import sys
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from monitor import __version__
from monitor.settings import Option, Settings
from monitor.signals import Stopping, StopSignals

ENV_PREFIX = "MONITOR_"
REQUIRED = "(required)"
_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no", "")
# DATA.json for 5,000 backends is under 1 MiB; the cap only refuses a wrong path quickly.
MAX_DATA_BYTES = 16 * 1024 * 1024
COMMANDS = ("render", "probe", "template", "demo")
EXAMPLES = """\
EXAMPLES
  the reference's command line, as in the static pod:
    monitor /var/lib/kubelet/kubeconfig /config/haproxy.cfg.tmpl /etc/haproxy/haproxy.cfg \\
      --api-vips 192.0.2.10 --check-interval 6s
  the same from the environment (systemd's EnvironmentFile=):
    MONITOR_KUBECONFIG=/var/lib/kubelet/kubeconfig MONITOR_TEMPLATE=/etc/haproxy/haproxy.cfg.j2 \\
      MONITOR_CFG=/etc/haproxy/haproxy.cfg MONITOR_API_VIPS=192.0.2.10 monitor
  start from a shipped template, check what it renders:
    monitor template haproxy.cfg.j2 > haproxy.cfg.j2 && monitor render haproxy.cfg.j2 data.json
  keepalived's or the kubelet's check:  monitor probe --url http://localhost:9444/haproxy_ready
  the whole thing against a simulated control plane and a real HAProxy:  monitor demo

"""
EXIT_STATUS = """\
EXIT STATUS (steering rules are removed before every exit but SIGKILL's)
  0        stopped by SIGTERM or SIGINT; --once: config applied and its reload delivered
  1        --once: no config applied, or its reload not delivered
  2        usage error, or --listen cannot be bound
  70       an internal error the loop could not survive (logged with its traceback)
  128+N    stopped by another signal N whose default is to end the process: SIGHUP 129, SIGQUIT 131,
           SIGUSR1 138, SIGUSR2 140, SIGALRM 142, SIGVTALRM, SIGPROF, SIGXCPU, SIGIO, SIGPWR, real-time signals
  SIGPIPE and SIGXFSZ are ignored (a closed socket and a write past the file-size limit are errors, not
  death); SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGTRAP, SIGSYS keep their default action (a crash of
  the interpreter: Python stacks dumped; the next start removes the rules at its first health check)."""


class _Parser(argparse.ArgumentParser):
    """argparse whose usage error is one line ending in a hint, not the whole usage block before it."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message}; try '{self.prog} --help'\n")


def _unknown_command(argv: Sequence[str]) -> str | None:
    """The usage error when the first word reads as a mistyped command, not the main job's KUBECONFIG; else None.

    A command-like word (no path, no dot) that is no file is taken as a command when it is close to one or is
    not followed by the main job's TEMPLATE and CFG.
    """
    word = argv[0]
    if word in COMMANDS or not re.fullmatch(r"[a-z][a-z0-9-]*", word) or os.path.lexists(word):
        return None
    close = difflib.get_close_matches(word, COMMANDS, n=1)
    three_paths = len(argv) >= 3 and not any(a.startswith("-") for a in argv[1:3])
    if three_paths and not close:
        return None
    guess = f"did you mean '{close[0]}'? " if close else ""
    return (
        f"unknown command {word!r}: {guess}commands are {', '.join(COMMANDS)}, "
        "or the main job: monitor KUBECONFIG TEMPLATE CFG --api-vips VIP"
    )


@dataclass(frozen=True)
class _Declared:
    """One Settings field and its option, with what the CLI derives from them."""

    field: dataclasses.Field[Any]
    option: Option
    choices: tuple[str, ...] | None  # from a Literal type

    @property
    def flag(self) -> str:
        return self.option.flag or "--" + self.field.name.replace("_", "-")

    @property
    def switch(self) -> bool:
        return isinstance(self.field.default, bool)

    @property
    def required(self) -> bool:
        return self.field.default is dataclasses.MISSING

    @property
    def documented_default(self) -> str:
        """The default as ``--help`` states it (and so the README's options table)."""
        if self.required:
            return REQUIRED
        if self.option.default_text or self.switch:
            return self.option.default_text
        return self.option.show(self.field.default) if self.field.default not in (None, "") else ""


def _declared() -> list[_Declared]:
    hints = typing.get_type_hints(Settings)
    out = []
    for f in dataclasses.fields(Settings):
        choices = [
            a
            for t in _union_args(hints[f.name])
            if typing.get_origin(t) is Literal
            for a in typing.get_args(t)
        ]
        out.append(_Declared(f, f.metadata["option"], tuple(choices) or None))
    return out


def _union_args(hint: Any) -> tuple[Any, ...]:
    return typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)


def _env_name(flag: str) -> str:
    return ENV_PREFIX + flag.lstrip("-").upper().replace("-", "_")


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def _arg_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse`` with its ValueError as argparse's usage error, whose text argparse prints."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def _from_env(parser: argparse.ArgumentParser, env: str, d: _Declared) -> Any:
    """The value MONITOR_* gives (for a switch: whether it is turned on), or a usage error naming it."""
    raw = os.environ[env]
    if d.switch:
        if raw.strip().lower() not in (*_TRUE, *_FALSE):
            parser.error(f"{env}={raw!r}: use true or false")
        return raw.strip().lower() in _TRUE
    if d.choices and not raw:
        return d.field.default  # set but empty: as if unset
    if d.choices and raw not in d.choices:
        parser.error(f"{env}={raw!r}: choose from {', '.join(d.choices)}")
    try:
        return d.option.parse(raw)
    except ValueError as exc:
        parser.error(f"{env}={raw!r}: {exc}")


def _shown(d: _Declared, given: Any) -> str:
    """A value from the environment as --help shows it (never a stats password)."""
    if d.switch:
        return "True" if given else ""
    return "" if given in (None, "", ()) else d.option.show(given)


def _add(parser: argparse.ArgumentParser, d: _Declared, flag: str) -> None:
    """Add one flag, alias or positional, whose default comes from its MONITOR_* variable, else from Settings."""
    env = _env_name(flag)
    alias = flag != d.flag  # collects apart; settings_from_args adds its values to the option's
    if env in os.environ:
        given = _from_env(parser, env, d)
        default = d.field.default != given if d.switch else given
        shown = _shown(d, given)
    else:
        default = () if alias else None if d.required else d.field.default
        shown = "" if alias else d.documented_default
    suffix = "; required" if shown == REQUIRED else f"; default {shown}" if shown else ""
    help = f"{d.option.alias_help if alias else d.option.help} [env {env}{suffix}]"
    if d.option.positional:
        parser.add_argument(
            d.field.name, nargs="?", type=_arg_type(d.option.parse), default=default, help=help
        )
    elif d.switch:
        parser.add_argument(
            flag,
            dest=d.field.name,
            action="store_const",
            const=not d.field.default,
            default=default,
            help=help,
        )
    else:
        parser.add_argument(
            flag,
            dest=_dest(flag),
            type=_arg_type(d.option.parse),
            choices=d.choices,
            default=default,
            help=help,
        )


def build_parser() -> argparse.ArgumentParser:
    """The main job's parser: one argument per Settings field, each defaulting to its MONITOR_* variable."""
    p = _Parser(
        prog="monitor",
        # Raw text (the exit-status table keeps its columns), so the description is wrapped here.
        description="Keep HAProxy's API-server backends equal to the live control plane: watch, render, "
        "validate,\nwrite atomically, reload. Also: 'monitor render', 'monitor probe', 'monitor template', "
        "'monitor demo'\n(each with --help).",
        formatter_class=lambda prog: argparse.RawDescriptionHelpFormatter(
            prog, max_help_position=34, width=120
        ),
        epilog=EXAMPLES + EXIT_STATUS,
    )
    p.add_argument("--version", action="version", version=f"monitor {__version__}")
    for d in _declared():
        _add(p, d, d.flag)
        if d.option.alias:
            _add(p, d, d.option.alias)
    return p


def settings_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Settings:
    """Settings from the parsed arguments; a missing or inconsistent value is a usage error."""
    values: dict[str, Any] = {}
    for d in _declared():
        value = getattr(args, d.field.name)
        if d.option.alias:
            value = tuple(dict.fromkeys((*(value or ()), *getattr(args, _dest(d.option.alias)))))
        if d.required and not value:
            env = _env_name(d.flag)
            if d.option.positional:
                parser.error(f"missing {d.field.name.upper()} (positional argument or {env})")
            parser.error(f"{d.flag} is required (or {env})")
        values[d.field.name] = value
    try:
        return Settings(**values)
    except ValueError as exc:  # a check across fields, such as --settle-max against --settle
        parser.error(str(exc))


def render_main(argv: Sequence[str]) -> int:
    """``monitor render TEMPLATE DATA.json``: print the rendering to stdout."""
    from monitor.boundedread import read_bounded
    from monitor.render import Renderer, RenderError
    from monitor.render.data import lbconfig_from_json

    p = _Parser(prog="monitor render", description="Render TEMPLATE for the LBConfig in DATA.json.")
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
    try:
        # Bytes, as they would reach haproxy.cfg: a Go template's "\xff" is that byte, whatever the locale.
        data = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as exc:
        where = f"{args.template}: output holds a character UTF-8 cannot encode at offset {exc.start}"
        print(f"monitor render: {where}", file=sys.stderr)
        return 1
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
    return 0


def template_main(argv: Sequence[str]) -> int:
    """``monitor template [NAME]``: list the shipped templates, or print one (to start a config from)."""
    from monitor.shipped import template_names, template_text

    p = _Parser(
        prog="monitor template",
        description="List the templates shipped in the package, or print one to stdout.",
        epilog="example: monitor template haproxy.cfg.j2 > /etc/haproxy/haproxy.cfg.j2",
    )
    p.add_argument("name", nargs="?", help="a shipped template's file name; omitted: list them")
    args = p.parse_args(argv)
    if args.name is None:
        print("\n".join(template_names()))
        return 0
    try:
        sys.stdout.write(template_text(args.name))
    except ValueError as exc:
        print(f"monitor template: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "probe":
        from monitor.probe import main as probe_main  # light: keepalived runs it every two seconds

        return probe_main(argv[1:])
    if argv and argv[0] == "render":
        return render_main(argv[1:])
    if argv and argv[0] == "template":
        return template_main(argv[1:])
    if argv and argv[0] == "demo":
        from monitor.testbed.demo import main as demo_main

        return demo_main(argv[1:])
    if argv and (unknown := _unknown_command(argv)):
        print(f"monitor: error: {unknown}; try 'monitor --help'", file=sys.stderr)
        return 2

    def parsed() -> Settings:
        parser = build_parser()
        return settings_from_args(parser.parse_args(argv), parser)

    try:
        # Before anything slow (monitor.app's imports, building the adapters): a stop during start-up ends
        # cleanly too.
        StopSignals.install()
        settings = parsed()
    except Stopping as stopping:
        # Parsing is quick and pure: finish it, for the VIPs and ports whose rules are to be removed.
        return _leaving(_stopped_during_start_up(parsed(), stopping))
    try:
        from monitor import logs

        logs.setup(fmt=settings.log_format, level=settings.log_level)
        from monitor.app import run
    except Stopping as stopping:
        return _leaving(_stopped_during_start_up(settings, stopping))
    try:
        return _leaving(run(settings))
    except Stopping as stopping:  # in the instant before run() caught it, or in its teardown: remove again
        from monitor.app import remove_steering

        remove_steering(settings)
        return _leaving(stopping.code)


def _leaving(code: int) -> int:
    """The exit code, once everything an exit must do is done (rules removed, threads stopped, logs written)."""
    # The interpreter's last garbage collections over a 5,000-node heap took 0.35 s of a stop's 0.5 s budget;
    # frozen, the objects are left to the OS. Exit handlers still run.
    gc.freeze()
    return code


def _stopped_during_start_up(settings: Settings, stopping: Stopping) -> int:
    """A stop signal before the main job ran: the rules an earlier run may have left removed, the signal's code."""
    from monitor import logs

    logs.setup(fmt=settings.log_format, level=settings.log_level)
    logs.Log("loop").info("stopping", reason=stopping.name, exit_code=stopping.code, during="start-up")
    from monitor.app import remove_steering

    remove_steering(settings)
    return stopping.code
