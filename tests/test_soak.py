"""A short soak run of the real monitor process: no open file, thread or memory is left behind per operation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.netns import available

pytestmark = [
    pytest.mark.netns,
    pytest.mark.haproxy,
    pytest.mark.skipif(available() is not None, reason=f"netns tests: {available()}"),
]

ROOT = Path(__file__).resolve().parents[1]


def test_thousands_of_reconnects_scrapes_changes_and_rotations_leave_no_fd_thread_or_memory_behind() -> None:
    # Three rounds: after the first (the warm-up) the process must hold what it held then.
    argv = [
        sys.executable, "-m", "monitor.testbed.soak", "--json", "--rounds", "3",
        "--reconnects", "900", "--changes", "45", "--scrapes", "3000", "--rotations", "45",
    ]  # fmt: skip
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=110, check=False)
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and lines, done.stderr[-2000:]
    result = json.loads(lines[-1])
    verdict = result["verdict"]
    assert verdict["fd_growth"] == 0, done.stdout
    assert verdict["thread_growth"] == 0, done.stdout
    assert verdict["rss_growth_mb"] <= 2.0, done.stdout
    assert result["monitor_error_lines"] == 0, done.stdout
    assert [r["operations"] for r in result["rounds"]] == [1330, 1330, 1330]
