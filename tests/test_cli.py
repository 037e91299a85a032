"""The command line is a drop-in for the reference's, plus our options, each also an environment variable."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.cli import build_parser, settings_from_args
from monitor.settings import parse_duration


def settings(argv, monkeypatch=None, env=None):
    if env and monkeypatch:
        for k, v in env.items():
            monkeypatch.setenv(k, v)
    parser = build_parser()
    return settings_from_args(parser.parse_args(argv), parser)


def test_the_reference_command_line_is_accepted_unchanged():
    s = settings(
        [
            "/var/lib/kubelet/kubeconfig",
            "/config/haproxy.cfg.tmpl",
            "/etc/haproxy/haproxy.cfg",
            "--api-vips",
            "192.0.2.10,2001:db8::10",
            "--api-port",
            "6443",
            "--lb-port",
            "9445",
            "--stat-port",
            "29445",
            "--check-interval",
            "6s",
        ]
    )
    assert str(s.kubeconfig) == "/var/lib/kubelet/kubeconfig"
    assert str(s.template) == "/config/haproxy.cfg.tmpl" and str(s.cfg) == "/etc/haproxy/haproxy.cfg"
    assert s.api_vips == ("192.0.2.10", "2001:db8::10")
    assert (s.api_port, s.lb_port, s.stat_port, s.check_interval) == (6443, 9445, 29445, 6.0)


def test_the_deprecated_single_vip_flag_still_works():
    s = settings(["k", "t", "c", "--api-vip", "192.0.2.10"])
    assert s.api_vips == ("192.0.2.10",)


def test_defaults_match_the_reference_and_our_choices():
    s = settings(["k", "t.j2", "c", "--api-vips=192.0.2.10"])
    assert (s.api_port, s.lb_port, s.stat_port, s.check_interval) == (6443, 9445, 29445, 6.0)
    assert str(s.reload_socket) == "/var/run/haproxy/haproxy-master.sock"
    assert s.source == "nodes" and s.node_selector == "node-role.kubernetes.io/master="
    assert s.listen == "127.0.0.1:9448" and s.steering is True
    assert (s.health_on, s.health_off) == (3, 11)
    assert s.stats_socket is None and s.stats_url is None, "stats sources come from the rendered config"


def test_every_option_can_come_from_the_environment(monkeypatch):
    env = {
        "MONITOR_API_VIPS": "2001:db8::10",
        "MONITOR_SETTLE": "500ms",
        "MONITOR_CHECK_INTERVAL": "1m",
        "MONITOR_SOURCE": "endpointslices",
        "MONITOR_NO_STEERING": "true",
        "MONITOR_ONCE": "yes",
        "MONITOR_KUBECONFIG": "/k",
        "MONITOR_TEMPLATE": "/t",
        "MONITOR_CFG": "/c",
    }
    s = settings([], monkeypatch, env)
    assert s.api_vips == ("2001:db8::10",)
    assert (s.settle, s.check_interval, s.source) == (0.5, 60.0, "endpointslices")
    assert s.steering is False and s.once is True
    assert (str(s.kubeconfig), str(s.template), str(s.cfg)) == ("/k", "/t", "/c")


def test_every_option_and_positional_argument_of_the_parser_has_an_environment_variable_in_its_help():
    parser = build_parser()
    for action in parser._actions:
        if action.dest not in ("help", "version"):
            assert "[env MONITOR_" in (action.help or ""), action.option_strings or action.dest
    assert "[env MONITOR_TEMPLATE; required]" in run_cli("--help").stdout.replace("\n" + " " * 34, " ")


@pytest.mark.parametrize(
    ("text", "seconds"), [("6s", 6), ("500ms", 0.5), ("1m", 60), ("1m30s", 90), ("1.5h", 5400), ("2", 2)]
)
def test_durations_are_read_go_style(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "6 s", "-1s", "5x", "s"])
def test_bad_durations_are_refused(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args], capture_output=True, text=True, env=env, timeout=60
    )


def test_help_explains_every_option_in_one_line_each():
    proc = run_cli("--help")
    assert proc.returncode == 0
    for flag in (
        "--api-vips",
        "--settle",
        "--reload-socket",
        "--haproxy-bin",
        "--source",
        "--once",
        "--log-format",
    ):
        assert flag in proc.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["k", "t", "c"], "--api-vips is required"),
        (["k", "t", "c", "--api-vips", "192.0.2.300"], "not an IP address"),
        (["k", "t", "c", "--api-vips", "192.0.2.1", "--check-interval", "soon"], "invalid duration"),
        (["k", "t", "c", "--api-vips", "192.0.2.1", "--lb-port", "70000"], "not a port number"),
        (["--api-vips", "192.0.2.1"], "missing KUBECONFIG"),
    ],
)
def test_usage_errors_exit_2_with_a_one_line_reason(args, needle):
    proc = run_cli(*args)
    assert proc.returncode == 2
    assert needle in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("monitor: error:")


def test_a_usage_error_is_one_line_with_a_hint_not_the_usage_block():
    for args in (["k", "t", "c"], ["render"], ["template", "a", "b"], ["k", "t", "c", "--api-vips", "x"]):
        proc = run_cli(*args)
        assert proc.returncode == 2, args
        lines = proc.stderr.splitlines()
        assert len(lines) == 1, proc.stderr
        assert re.fullmatch(
            r"monitor( render| template)?: error: .+; try 'monitor( render| template)? --help'", lines[0]
        )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["foo"], "unknown command 'foo': commands are render, probe, template, demo"),
        (["rendr", "t.j2", "data.json"], "unknown command 'rendr': did you mean 'render'?"),
        (["prbe", "--url", "http://localhost:9444/"], "did you mean 'probe'?"),
    ],
)
def test_an_unknown_command_is_named_as_such_not_taken_for_a_missing_option(args, needle, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "monitor", *args], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert proc.returncode == 2
    assert needle in proc.stderr and "--api-vips is required" not in proc.stderr


def test_an_existing_file_named_like_a_word_is_still_the_main_jobs_kubeconfig(tmp_path):
    (tmp_path / "kubeconfig").write_text("")
    proc = subprocess.run(
        [sys.executable, "-m", "monitor", "kubeconfig"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 2 and "missing TEMPLATE" in proc.stderr


def test_version_prints_the_package_version():
    from monitor import __version__

    proc = run_cli("--version")
    assert proc.returncode == 0 and proc.stdout == f"monitor {__version__}\n"


def test_help_has_examples_and_exit_status_sections():
    out = run_cli("--help").stdout
    examples, status = out.index("\nEXAMPLES\n"), out.index("\nEXIT STATUS")
    assert examples < status
    assert "monitor /var/lib/kubelet/kubeconfig /config/haproxy.cfg.tmpl /etc/haproxy/haproxy.cfg" in out
    assert re.search(r"^  2 +usage error", out, re.M) and re.search(r"^  128\+N ", out, re.M)


def test_a_bad_environment_value_names_the_variable():
    import os

    env = dict(os.environ, MONITOR_LB_PORT="many")
    proc = run_cli("k", "t", "c", "--api-vips", "192.0.2.1", env=env)
    assert proc.returncode == 2 and "MONITOR_LB_PORT" in proc.stderr


def test_the_stats_source_can_be_forced_by_option_or_environment(monkeypatch):
    s = settings(["k", "t", "c", "--api-vips=192.0.2.1", "--stats-socket", "/run/haproxy/admin.sock"])
    assert str(s.stats_socket) == "/run/haproxy/admin.sock"
    url = "http://Username:Password@127.0.0.1:29445/haproxy_stats"
    assert settings(["k", "t", "c", "--api-vips=192.0.2.1", "--stats-url", url]).stats_url == url
    s = settings(["k", "t", "c", "--api-vips=192.0.2.1"], monkeypatch, {"MONITOR_STATS_URL": url})
    assert s.stats_url == url


def test_a_bad_stats_url_is_a_usage_error_that_does_not_print_the_password():
    proc = run_cli("k", "t", "c", "--api-vips", "192.0.2.1", "--stats-url", "https://admin:hunter2@h:1/stats")
    assert proc.returncode == 2
    assert "only http:// stats pages are supported" in proc.stderr and "hunter2" not in proc.stderr


def test_help_does_not_print_a_stats_password_taken_from_the_environment():
    import os

    env = dict(os.environ, MONITOR_STATS_URL="http://admin:hunter2@127.0.0.1:1/stats")
    proc = run_cli("--help", env=env)
    assert proc.returncode == 0 and "--stats-url" in proc.stdout and "hunter2" not in proc.stdout


def test_a_bad_choice_in_the_environment_names_the_variable_and_the_choices():
    env = dict(os.environ, MONITOR_SOURCE="endpoints")
    proc = run_cli("k", "t", "c", "--api-vips", "192.0.2.1", env=env)
    assert proc.returncode == 2
    assert "MONITOR_SOURCE='endpoints': choose from nodes, endpointslices" in proc.stderr


README = Path(__file__).resolve().parent.parent / "README.md"


def readme_options_table() -> dict[str, str]:
    """Flag → default column of the options table in the README's "Usage" section (backticks dropped)."""
    usage = README.read_text(encoding="utf-8").split("\n## Usage\n", 1)[1]
    section = re.split(r"\n##+ ", usage, maxsplit=1)[0]
    table: dict[str, str] = {}
    for line in section.splitlines():
        row = re.match(r"\| `(--[a-z0-9-]+)[^`]*` \|([^|]*)\|", line)
        if row:
            assert row[1] not in table, f"{row[1]} has two rows in the README's options table"
            table[row[1]] = row[2].replace("`", "").strip()
    return table


def help_defaults(monkeypatch) -> dict[str, str]:
    """Flag → the default `monitor --help` states, "(required)" for a required one, as shipped (no MONITOR_*)."""
    for name in list(os.environ):
        if name.startswith("MONITOR_"):
            monkeypatch.delenv(name)
    shown: dict[str, str] = {}
    for action in build_parser()._actions:
        if action.option_strings and action.dest not in ("help", "version"):
            end = re.search(r"\[env MONITOR_\w+(?:; (required|default (.+)))?\]$", action.help or "")
            assert end, f"{action.option_strings[0]}: its help does not end in [env ...; default ...]"
            shown[action.option_strings[0]] = "(required)" if end[1] == "required" else end[2] or ""
    return shown


def test_the_readme_options_table_lists_every_option_with_the_default_help_states(monkeypatch):
    readme, shown = readme_options_table(), help_defaults(monkeypatch)
    problems = [
        f"{flag}: in `monitor --help` but not in the README's options table" for flag in shown.keys() - readme
    ]
    problems += [f"{flag}: in the README's options table but not an option" for flag in readme.keys() - shown]
    problems += [
        f"{flag}: the README's default column says {readme[flag]!r}, `monitor --help` says {shown[flag]!r}"
        for flag in sorted(shown.keys() & readme.keys())
        if readme[flag] != shown[flag]
    ]
    assert not problems, "README.md is out of step with the options:\n" + "\n".join(sorted(problems))
