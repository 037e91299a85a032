"""``monitor probe``: exit codes and its one reason line, in-process and as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from monitor.probe import main, probe
from tests.fakehttp import FakeHTTP, closed_port

ROOT = Path(__file__).resolve().parent.parent


def test_a_200_exits_0_and_prints_one_ok_line(capsys: pytest.CaptureFixture[str]) -> None:
    with FakeHTTP("200").running() as srv:
        assert main(["--url", srv.url]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"ok: 200 from {srv.url} in ") and out.endswith(" ms\n")
    assert out.count("\n") == 1


def test_a_closed_port_exits_1_with_connection_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with closed_port() as port:
        url = f"http://127.0.0.1:{port}/haproxy_ready"
        assert main(["--url", url]) == 1
    assert capsys.readouterr().out == f"fail: connection refused to {url}\n"


def test_a_silent_server_fails_within_the_timeout(capsys: pytest.CaptureFixture[str]) -> None:
    with FakeHTTP("hang").running() as srv:
        start = time.monotonic()
        code = main(["--url", srv.url, "--timeout", "0.4"])
        took = time.monotonic() - start
    assert code == 1
    assert 0.3 < took < 0.4 + 0.2
    assert capsys.readouterr().out == f"fail: no answer from {srv.url} within 0.4s\n"


def test_a_trickling_server_cannot_stretch_the_probe_past_its_timeout() -> None:
    with FakeHTTP("trickle").running() as srv:
        # The status line arrives at once: the body is never read.
        result = probe(srv.url, timeout=0.4)
    assert result.ok and result.elapsed < 0.4


@pytest.mark.parametrize("mode", ["503", "404"])
def test_a_non_200_exits_1_and_names_the_status(mode: str, capsys: pytest.CaptureFixture[str]) -> None:
    with FakeHTTP(mode).running() as srv:
        assert main(["--url", srv.url]) == 1
    assert capsys.readouterr().out == f"fail: HTTP {mode} from {srv.url} (want 200)\n"


def test_garbage_instead_of_http_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    with FakeHTTP("garbage").running() as srv:
        assert main(["--url", srv.url]) == 1
    assert capsys.readouterr().out == f"fail: invalid HTTP response from {srv.url}\n"


def test_an_ipv6_loopback_url_works() -> None:
    with FakeHTTP("200", host="::1").running() as srv:
        assert probe(srv.url, timeout=2).ok


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--url", "https://localhost:9444/"], "only http:// URLs"),
        (["--url", "localhost:9444"], "only http:// URLs"),
        (["--url", "http:///x"], "no host"),
        (["--url", "http://localhost:99999/"], "bad port"),
        (["--timeout", "0"], "--timeout 0"),
        (["--timeout", "soon"], "invalid float value"),
        (["--bogus"], "unrecognized arguments"),
    ],
)
def test_usage_errors_exit_2_with_a_message_on_stderr(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err


def test_the_probe_runs_as_a_module_without_importing_heavy_dependencies() -> None:
    code = (
        "import sys, runpy; sys.argv = ['probe', '--url', sys.argv[1], '--timeout', '1'];"
        "\ntry:\n    runpy.run_module('monitor.probe', run_name='__main__')"
        "\nexcept SystemExit as e:\n    heavy = sorted(m for m in sys.modules if m.split('.')[0] in"
        " ('kubernetes', 'jinja2', 'prometheus_client', 'requests', 'watchdog', 'yaml'))"
        "\n    print(e.code, heavy)"
    )
    with FakeHTTP("200").running() as srv:
        done = subprocess.run(
            [sys.executable, "-c", code, srv.url],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            check=False,
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "0 []"
