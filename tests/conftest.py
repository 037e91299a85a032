"""Shared fixtures: real binaries from Debian, found or (in CI) required."""

from __future__ import annotations

import os
import shutil

import pytest

IN_CI = os.environ.get("CI") == "true"


def _binary(name: str, *extra: str) -> str:
    path = shutil.which(name) or next((p for p in extra if os.access(p, os.X_OK)), None)
    if path is None:
        if IN_CI:
            pytest.fail(f"{name} is required in CI (.ci/run installs it)")
        pytest.skip(f"{name} not installed")
    return path


@pytest.fixture(scope="session")
def haproxy_bin() -> str:
    return _binary("haproxy", "/usr/sbin/haproxy")


@pytest.fixture(scope="session")
def iptables_nft() -> str:
    """Debian's iptables-nft, to plant the rules the reference monitor made before it moved to nftables."""
    return _binary("iptables-nft", "/usr/sbin/iptables-nft")
