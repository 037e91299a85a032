"""The reload handler as a program: its help, its usage errors, its environment, and its one-file build."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from haproxy_reload_handler.cli import SETTINGS, parse_args

ROOT = Path(__file__).resolve().parents[1]


def run_handler(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "haproxy_reload_handler", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=environ,
    )


def test_help_lists_every_option_with_the_environment_variables_that_can_give_it() -> None:
    done = run_handler("--help")
    assert done.returncode == 0, done.stderr
    help_text = " ".join(done.stdout.split())  # argparse wraps lines anywhere
    for flag, variables in [
        ("--config", ["RELOAD_HANDLER_CONFIG"]),
        ("--master-socket", ["RELOAD_HANDLER_MASTER_SOCKET"]),
        ("--admin-socket", ["RELOAD_HANDLER_ADMIN_SOCKET"]),
        ("--pid-file", ["RELOAD_HANDLER_PID_FILE"]),
        ("--log-socket", ["RELOAD_HANDLER_LOG_SOCKET"]),
        ("--haproxy", ["RELOAD_HANDLER_HAPROXY"]),
        ("--force-stop-after", ["RELOAD_HANDLER_FORCE_STOP_AFTER", "OLD_HAPROXY_PS_FORCE_DEL_TIMEOUT"]),
        ("--kill-grace", ["RELOAD_HANDLER_KILL_GRACE"]),
        ("--ready-timeout", ["RELOAD_HANDLER_READY_TIMEOUT"]),
        ("--socket-mode", ["RELOAD_HANDLER_SOCKET_MODE"]),
    ]:
        assert flag in help_text
        assert f"[env {', '.join(variables)};" in help_text, flag
    assert len(SETTINGS) == 10, "a new option needs a line in this test"


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--kill-grace", "soon"], {}, "--kill-grace 'soon' is not a number of seconds"),
        ([], {"RELOAD_HANDLER_KILL_GRACE": "0"}, "RELOAD_HANDLER_KILL_GRACE='0' must be more than 0"),
        ([], {"OLD_HAPROXY_PS_FORCE_DEL_TIMEOUT": "-1"}, "OLD_HAPROXY_PS_FORCE_DEL_TIMEOUT='-1' must be"),
        (["--socket-mode", "rw"], {}, "--socket-mode 'rw' is not an octal mode"),
        (["--haproxy", "/nonexistent/haproxy"], {}, "--haproxy '/nonexistent/haproxy' is not an executable"),
        (["--no-such-option"], {}, "unrecognized arguments: --no-such-option"),
    ],
)
def test_a_usage_error_exits_2_with_one_line_naming_the_option_or_variable(
    args: list[str], env: dict[str, str], named: str
) -> None:
    done = run_handler("--haproxy", "/bin/true", *args, env=env)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("haproxy-reload-handler: error: ")
    assert named in done.stderr


def test_the_reference_variable_sets_the_force_stop_deadline_unless_the_handler_variable_is_set() -> None:
    base = ["--haproxy", "/bin/true"]
    assert parse_args(base, environ={}).force_stop_after == 120
    assert parse_args(base, environ={"OLD_HAPROXY_PS_FORCE_DEL_TIMEOUT": "30"}).force_stop_after == 30
    both = {"OLD_HAPROXY_PS_FORCE_DEL_TIMEOUT": "30", "RELOAD_HANDLER_FORCE_STOP_AFTER": "45"}
    assert parse_args(base, environ=both).force_stop_after == 45
    assert parse_args([*base, "--force-stop-after", "7"], environ=both).force_stop_after == 7
    # An empty variable (a common manifest slip) counts as unset rather than as an error.
    assert parse_args(base, environ={"RELOAD_HANDLER_FORCE_STOP_AFTER": ""}).force_stop_after == 120


def test_the_one_file_build_runs_on_the_system_python_alone(tmp_path: Path) -> None:
    program = tmp_path / "haproxy-reload-handler"
    subprocess.run([ROOT / "container" / "build-reload-handler", program], check=True, timeout=60)
    assert program.read_bytes().startswith(b"#!/usr/bin/python3 -I\n")
    assert os.stat(program).st_mode & 0o777 == 0o755
    # An empty environment and python -I: neither the monitor package nor any virtualenv is importable.
    done = subprocess.run([program, "--help"], capture_output=True, text=True, timeout=30, env={})
    assert done.returncode == 0, done.stderr
    assert "RELOAD_HANDLER_FORCE_STOP_AFTER" in done.stdout
    bad = subprocess.run([program, "--kill-grace", "x"], capture_output=True, text=True, timeout=30, env={})
    assert bad.returncode == 2
