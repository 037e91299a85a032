"""`monitor demo` (the README's first command) runs the main job end to end and exits 0."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest


@pytest.mark.haproxy
def test_the_demo_walks_through_every_step_and_reports_how_long_haproxy_took(haproxy_bin: str):
    proc = subprocess.run(
        [sys.executable, "-m", "monitor", "demo"], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for step in ("first config applied", "change served", "removal served", "addition served"):
        match = re.search(rf"{step} in ([0-9.]+) s", out)
        assert match, f"missing step {step!r} in:\n{out}"
        assert float(match.group(1)) < 5.0
    assert "master-1=127.0.0.21" in out and "master-3=127.0.0.14" in out
    # The first config starts HAProxy; the address change, the removal and the addition go over the admin socket.
    assert out.rstrip().endswith("demo passed: 1 reloads, 3 runtime changes, 0 failed steps")
