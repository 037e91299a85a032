"""The package layout: the sidecar's runtime does not load the test bench (import-linter checks the rest)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_main_job_imports_no_module_of_the_test_bench() -> None:
    # Import-linter sees that only the CLI imports monitor.testbed, not that the import stays inside the demo
    # entry; a top-level import there would load the simulator into every sidecar.
    code = (
        "import sys, monitor.entry, monitor.cli, monitor.app;"
        "print(sorted(m for m in sys.modules if m.startswith('monitor.testbed')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
