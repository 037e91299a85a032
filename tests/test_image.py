"""The container image (Containerfile), as the static pod runs it: built by .ci/image, smoke-tested with podman."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import IN_CI

REPO = Path(__file__).resolve().parent.parent
IMAGE = os.environ.get("HAPROXY_MONITOR_IMAGE", "localhost/haproxy-monitor:ci")
# The podman settings these machines need (runc, cgroupfs, ulimits): see the file.
PODMAN_ENV = {
    **os.environ,
    "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(REPO / ".ci" / "containers.conf")),
}
DATA = {
    "ApiPort": 6443,
    "LbPort": 9445,
    "StatPort": 29445,
    "FrontendAddr": "",
    "Backends": [{"Host": "master-0", "Address": "127.0.0.11", "Port": 6443}],
}


def podman(*argv: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["podman", *argv], env=PODMAN_ENV, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc


@pytest.fixture(scope="module")
def image() -> str:
    """The image .ci/image built (CI builds it before the tests); elsewhere missing means skipped."""
    missing = None
    if shutil.which("podman") is None:
        missing = "podman not installed (bash .ci/setup)"
    elif podman("image", "exists", IMAGE, check=False).returncode != 0:
        missing = f"image {IMAGE} not built (bash .ci/image)"
    if missing:
        if IN_CI:
            pytest.fail(f"{missing}: .ci/run builds it before the tests")
        pytest.skip(missing)
    return IMAGE


def wait_until(predicate: Callable[[], object], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def test_the_image_holds_what_the_sidecar_runs_and_nothing_it_does_not(image):
    script = (
        "id -u; for t in ip nft haproxy python3 monitor haproxy-reload-handler; do command -v $t; done; "
        "echo lists=$(ls /var/lib/apt/lists | wc -l); "
        "echo pip=$(ls /opt/haproxy-monitor/lib/python3*/site-packages | grep -c -E '^(pip|setuptools)([-_.]|$)'); "
        "ip -o link show lo >/dev/null && echo ip-works; nft --version"
    )
    out = podman("run", "--rm", "--network=none", image, "sh", "-c", script).stdout.split("\n")
    assert out[0] == "1001"  # the unprivileged default user
    for tool in (
        "/usr/sbin/ip",
        "/usr/sbin/nft",
        "/usr/sbin/haproxy",
        "/usr/bin/python3",
        "/usr/local/bin/monitor",
    ):
        assert tool in out, out
    assert "lists=0" in out and "pip=0" in out and "ip-works" in out, out


def test_the_image_answers_help_with_exit_status_and_examples(image):
    out = podman("run", "--rm", "--network=none", image, "monitor", "--help").stdout
    assert (
        "EXAMPLES" in out
        and "EXIT STATUS" in out
        and "[env MONITOR_TEMPLATE; required]" in out.replace("\n" + " " * 34, " ")
    )
    assert podman("run", "--rm", "--network=none", image).stdout.startswith(
        "usage: monitor"
    )  # the default CMD


@pytest.fixture
def handler(image, tmp_path) -> Iterator[tuple[str, Path]]:
    """The haproxy container of the static pod: the reload handler, as uid 0 without capabilities, read-only."""
    conf = tmp_path / "etc-haproxy"
    conf.mkdir()
    (tmp_path / "data.json").write_text(json.dumps(DATA))
    rendered = subprocess.run(
        [str(REPO / ".venv" / "bin" / "python"), "-m", "monitor", "render", str(REPO / "templates" / "haproxy.cfg.j2"),
         str(tmp_path / "data.json")],
        capture_output=True, text=True, check=True, timeout=60, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
    ).stdout  # fmt: skip
    (conf / "haproxy.cfg").write_text(rendered)
    name = f"hm-handler-{uuid.uuid4().hex[:8]}"
    podman(
        "run", "-d", "--name", name, "--network=none", "--user=0", "--cap-drop=ALL", "--read-only",
        "--security-opt=no-new-privileges", "-v", f"{conf}:/etc/haproxy:ro",
        "--tmpfs", "/var/run/haproxy", "--tmpfs", "/var/lib/haproxy/run", "--tmpfs", "/tmp",
        image, "haproxy-reload-handler",
    )  # fmt: skip
    try:
        yield name, conf
    finally:
        podman("rm", "-f", "-t", "0", name, check=False)


def test_the_reload_handler_in_the_image_runs_haproxy_reloads_it_and_monitor_probe_sees_it(handler):
    name, conf = handler

    def probe() -> bool:
        return podman("exec", name, "monitor", "probe", "--timeout", "1", check=False).returncode == 0

    wait_until(probe, timeout=30, what="monitor probe to pass against the handler's HAProxy")
    pid = podman("exec", name, "cat", "/var/lib/haproxy/run/haproxy.pid").stdout.strip()
    config = (conf / "haproxy.cfg").read_text().replace("127.0.0.11:6443", "127.0.0.12:6443")
    (conf / "haproxy.cfg").write_text(config)
    # What the monitor container does after writing a config: one line on the shared master socket.
    send = (
        "import socket; s = socket.socket(socket.AF_UNIX); s.connect('/var/run/haproxy/haproxy-master.sock'); "
        "s.sendall(b'reload\\n'); s.close()"
    )
    podman("exec", name, "python3", "-c", send)

    def reloaded() -> bool:
        now = podman("exec", name, "cat", "/var/lib/haproxy/run/haproxy.pid", check=False).stdout.strip()
        return bool(now) and now != pid

    wait_until(reloaded, timeout=30, what="a new HAProxy after the reload line")
    assert probe()
    logs = podman("logs", name).stdout + podman("logs", name).stderr
    assert "reload" in logs.lower(), logs
