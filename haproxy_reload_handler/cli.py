"""Command line and environment → Options, and ``main``; each option is declared once, with its variables."""

from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, NoReturn, TypeVar

from haproxy_reload_handler.handler import Handler, Options
from haproxy_reload_handler.log import PROG, log

EXIT_USAGE = 2
T = TypeVar("T")


class UsageError(ValueError):
    """A value on the command line or in the environment that the handler cannot use."""


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError("is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise UsageError("must be a finite number of seconds, 0 or more")
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value == 0:
        raise UsageError("must be more than 0 seconds")
    return value


def _mode(text: str) -> int:
    try:
        value = int(text, 8)
    except ValueError:
        raise UsageError("is not an octal mode such as 0660") from None
    if not 0 <= value <= 0o777:
        raise UsageError("is not a permission mode (0000-0777)")
    return value


def _optional_path(text: str) -> Path | None:
    return Path(text) if text else None


def _default_haproxy() -> str:
    if os.access("/usr/sbin/haproxy", os.X_OK):
        return "/usr/sbin/haproxy"
    return shutil.which("haproxy") or "/usr/sbin/haproxy"


def _haproxy(text: str) -> str:
    path = text if "/" in text else (shutil.which(text) or text)
    if not os.access(path, os.X_OK):
        raise UsageError("is not an executable; install haproxy or pass its path")
    return path


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One option: its flag, the environment variables that may give it (first set wins), default and check."""

    flag: str
    env: tuple[str, ...]
    default: str | Callable[[], str]
    help: str
    convert: Callable[[str], T]
    metavar: str = "PATH"

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")

    def default_text(self) -> str:
        return self.default() if callable(self.default) else self.default


CONFIG = Setting(
    "--config", ("RELOAD_HANDLER_CONFIG",), "/etc/haproxy/haproxy.cfg", "HAProxy config to run", Path
)
MASTER_SOCKET = Setting(
    "--master-socket",
    ("RELOAD_HANDLER_MASTER_SOCKET",),
    "/var/run/haproxy/haproxy-master.sock",
    "unix stream socket where each line 'reload' starts a new HAProxy",
    Path,
)
ADMIN_SOCKET = Setting(
    "--admin-socket",
    ("RELOAD_HANDLER_ADMIN_SOCKET",),
    "/var/lib/haproxy/run/haproxy.sock",
    "HAProxy's stats socket with expose-fd listeners, passed with -x for seamless reloads",
    Path,
)
PID_FILE = Setting(
    "--pid-file", ("RELOAD_HANDLER_PID_FILE",), "/var/lib/haproxy/run/haproxy.pid", "HAProxy's -p file", Path
)
LOG_SOCKET = Setting(
    "--log-socket",
    ("RELOAD_HANDLER_LOG_SOCKET",),
    "/var/run/haproxy/haproxy-log.sock",
    "unix datagram socket copied to stdout; --log-socket '' disables it",
    _optional_path,
)
HAPROXY = Setting("--haproxy", ("RELOAD_HANDLER_HAPROXY",), _default_haproxy, "HAProxy binary", _haproxy)
# The reference static pod sets OLD_HAPROXY_PS_FORCE_DEL_TIMEOUT: it stays accepted as an alias.
FORCE_STOP_AFTER = Setting(
    "--force-stop-after",
    ("RELOAD_HANDLER_FORCE_STOP_AFTER", "OLD_HAPROXY_PS_FORCE_DEL_TIMEOUT"),
    "120",
    "seconds after a reload before old processes still alive get SIGTERM; 0 disables",
    _seconds,
    "SECONDS",
)
KILL_GRACE = Setting(
    "--kill-grace",
    ("RELOAD_HANDLER_KILL_GRACE",),
    "5",
    "seconds between SIGTERM and SIGKILL",
    _positive_seconds,
    "SECONDS",
)
READY_TIMEOUT = Setting(
    "--ready-timeout",
    ("RELOAD_HANDLER_READY_TIMEOUT",),
    "10",
    "seconds to wait for a new HAProxy to fork its worker before the next reload may start",
    _positive_seconds,
    "SECONDS",
)
SOCKET_MODE = Setting(
    "--socket-mode",
    ("RELOAD_HANDLER_SOCKET_MODE",),
    "0660",
    "octal mode of the master and log sockets",
    _mode,
    "OCTAL",
)
SETTINGS: tuple[Setting[Any], ...] = (
    CONFIG,
    MASTER_SOCKET,
    ADMIN_SOCKET,
    PID_FILE,
    LOG_SOCKET,
    HAPROXY,
    FORCE_STOP_AFTER,
    KILL_GRACE,
    READY_TIMEOUT,
    SOCKET_MODE,
)


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="Serve the master socket; start, reload (seamless -x/-sf) and retire HAProxy. "
        "Each option may also be given by the environment variables named in its help (the first one set "
        "wins, an empty value counts as unset); the command line wins over the environment.",
        formatter_class=lambda prog: argparse.HelpFormatter(prog, max_help_position=30, width=110),
    )
    for s in SETTINGS:
        p.add_argument(
            s.flag,
            metavar=s.metavar,
            default=None,
            help=f"{s.help} [env {', '.join(s.env)}; default {s.default_text()}]",
        )
    return p


def parse_args(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Options:
    """Options from argv and the environment; a bad value is a usage error (one line, exit 2)."""
    parser = build_parser()
    ns = parser.parse_args(argv)
    env = os.environ if environ is None else environ

    def value(setting: Setting[T]) -> T:
        given: str | None = getattr(ns, setting.dest)
        if given is not None:
            raw, source = given, f"{setting.flag} {given!r}"
        else:
            name = next((n for n in setting.env if env.get(n)), None)
            raw = env[name] if name else setting.default_text()
            source = f"{name}={raw!r}" if name else f"{setting.flag} default {raw!r}"
        try:
            return setting.convert(raw)
        except UsageError as exc:
            parser.error(f"{source} {exc}")

    return Options(
        config=value(CONFIG),
        master_socket=value(MASTER_SOCKET),
        admin_socket=value(ADMIN_SOCKET),
        pid_file=value(PID_FILE),
        log_socket=value(LOG_SOCKET),
        haproxy=value(HAPROXY),
        force_stop_after=value(FORCE_STOP_AFTER),
        kill_grace=value(KILL_GRACE),
        ready_timeout=value(READY_TIMEOUT),
        socket_mode=value(SOCKET_MODE),
    )


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    handler = Handler(opts)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
        signal.signal(sig, handler.on_signal)
    try:
        handler.prepare()
    except SystemExit as exc:
        log(str(exc))
        return 1
    return handler.run()


if __name__ == "__main__":
    sys.exit(main())
