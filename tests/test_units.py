"""The systemd units for bare-metal hosts: valid for systemd, hardened, and set up for Type=notify."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import IN_CI

REPO = Path(__file__).resolve().parent.parent
UNITS = sorted((REPO / "container").glob("*.service"))
# systemd's own scale: 0 is fully locked down, 10 fully exposed; "OK" ends at 4.9. Both units stay far below.
MAX_EXPOSURE = 2.5


@pytest.fixture(scope="module")
def analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        if IN_CI:
            pytest.fail("systemd-analyze is required in CI (.ci/setup installs the systemd package)")
        pytest.skip("systemd-analyze not installed (Debian package systemd)")
    return path


def unit_settings(unit: Path) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_the_units_are_the_two_commands_the_packages_install():
    assert [u.name for u in UNITS] == ["haproxy-monitor.service", "haproxy-reload-handler.service"]


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_systemd_analyze_verify_accepts_the_unit(unit, analyze, tmp_path):
    # verify insists that ExecStart's program exists: the copy points at a stand-in at the same relative path.
    stand_in = tmp_path / "usr" / "local" / "bin"
    stand_in.mkdir(parents=True)
    for name in ("monitor", "haproxy-reload-handler"):
        (stand_in / name).write_text("#!/bin/sh\n")
        (stand_in / name).chmod(0o755)
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text().replace("=/usr/local/bin/", f"={stand_in}/"))
    proc = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0 and proc.stdout + proc.stderr == "", proc.stdout + proc.stderr


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_systemd_rates_the_units_hardening_well_below_its_ok_mark(unit, analyze):
    proc = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    score = re.search(r"Overall exposure level for \S+: ([0-9.]+)", proc.stdout)
    assert score, proc.stdout + proc.stderr
    assert float(score[1]) <= MAX_EXPOSURE, proc.stdout
    settings = unit_settings(unit)
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "PrivateDevices": "yes",
        "UMask": "0077",
        "SystemCallFilter": "@system-service",
        "RestartPreventExitStatus": "2",
    }.items():
        assert value in settings.get(key, []), f"{unit.name}: {key}={value} missing"


def test_the_monitor_unit_is_type_notify_with_a_watchdog_its_loop_feeds():
    settings = unit_settings(REPO / "container" / "haproxy-monitor.service")
    assert settings["Type"] == ["notify"] and settings["NotifyAccess"] == ["main"]
    watchdog = settings["WatchdogSec"][0]
    assert watchdog.endswith("s") and float(watchdog[:-1]) >= 4 * 1.0  # the loop pings every quarter
    assert settings["CapabilityBoundingSet"] == ["CAP_NET_ADMIN"]
    # The single-file build must not need a writable HOME (ProtectHome=yes).
    assert "PEX_ROOT=/var/cache/haproxy-monitor/pex" in settings["Environment"]
    assert settings["CacheDirectory"] == ["haproxy-monitor"]
