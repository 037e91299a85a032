"""container/haproxy-monitor.service run by a real systemd (PID 1 in a podman container built on the image).

systemd starts the monitor as Type=notify, kills it through the watchdog when its loop stops feeding it and
restarts it, and does not restart it after a usage error (exit status 2).
"""

from __future__ import annotations

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
PODMAN_ENV = {
    **os.environ,
    "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(REPO / ".ci" / "containers.conf")),
}
# The unit as shipped, with the watchdog shortened (30 s) so that the test does not wait for it.
WATCHDOG = 4
CONTAINERFILE = f"""\
FROM {IMAGE}
USER 0
RUN apt-get update && apt-get install -y --no-install-recommends systemd systemd-sysv \\
 && rm -rf /var/lib/apt/lists/*
COPY haproxy-monitor.service /etc/systemd/system/
RUN mkdir -p /etc/sysconfig /etc/haproxy \\
 && printf '%s\\n' MONITOR_KUBECONFIG=/var/lib/kubelet/kubeconfig MONITOR_TEMPLATE=/etc/haproxy/haproxy.cfg.j2 \\
      MONITOR_CFG=/etc/haproxy/haproxy.cfg MONITOR_API_VIPS=192.0.2.10 MONITOR_LISTEN= MONITOR_NO_STEERING=true \\
      MONITOR_ARGS= > /etc/sysconfig/haproxy-monitor \\
 && monitor template haproxy.cfg.j2 > /etc/haproxy/haproxy.cfg.j2 \\
 && sed -i 's/^WatchdogSec=.*/WatchdogSec={WATCHDOG}s/' /etc/systemd/system/haproxy-monitor.service \\
 && systemctl enable haproxy-monitor.service
CMD ["/lib/systemd/systemd"]
"""

pytestmark = pytest.mark.timeout(300)


def podman(*argv: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["podman", *argv], env=PODMAN_ENV, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"podman {' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()[-2000:]}"
        )
    return proc


def wait_until(predicate: Callable[[], object], *, timeout: float, what: str, log: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{log()}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def booted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., str]]:
    """A container whose PID 1 is systemd, the monitor's unit enabled; yields ``sh(script)`` run inside it."""
    if shutil.which("podman") is None or podman("image", "exists", IMAGE, check=False).returncode != 0:
        if IN_CI:
            pytest.fail(f"podman and {IMAGE} are required in CI (.ci/run runs .ci/image first)")
        pytest.skip(f"podman or the image {IMAGE} missing (bash .ci/setup && bash .ci/image)")
    context = tmp_path_factory.mktemp("systemd-image")
    (context / "Containerfile").write_text(CONTAINERFILE)
    shutil.copy(REPO / "container" / "haproxy-monitor.service", context)
    tag = f"localhost/hm-systemd-test:{uuid.uuid4().hex[:8]}"
    name = f"hm-systemd-{uuid.uuid4().hex[:8]}"
    podman("build", "--pull=never", "--network=host", "-q", "-t", tag, str(context), timeout=240)
    try:
        podman("run", "-d", "--name", name, "--systemd=always", "--network=none", tag)

        def sh(script: str) -> str:
            return podman("exec", name, "sh", "-c", script, check=False).stdout.strip()

        yield sh
    finally:
        podman("rm", "-f", "-t", "0", name, check=False)
        podman("rmi", "-f", tag, check=False)


def show(sh: Callable[[str], str]) -> dict[str, str]:
    text = sh("systemctl show -p MainPID -p NRestarts -p ActiveState -p Result -p StatusText -p ExecMainStatus "
              "haproxy-monitor")  # fmt: skip
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def journal(sh: Callable[[str], str]) -> Callable[[], str]:
    return lambda: sh("journalctl -u haproxy-monitor --no-pager | tail -20")


def test_systemd_kills_and_restarts_a_monitor_whose_loop_stops_feeding_the_watchdog(booted):
    sh = booted
    # Type=notify: active only once the monitor said READY=1 (its STATUS= line shows in systemctl).
    wait_until(lambda: show(sh).get("StatusText", "").startswith("watching nodes"), timeout=60,
               what="the unit active with the monitor's status", log=journal(sh))  # fmt: skip
    before = show(sh)
    assert before["ActiveState"] == "active" and before["NRestarts"] == "0"
    time.sleep(WATCHDOG * 1.5)  # longer than the watchdog: the running loop keeps it fed
    assert show(sh)["MainPID"] == before["MainPID"], journal(sh)()
    sh(f"kill -STOP {before['MainPID']}")  # a hung loop
    wait_until(lambda: show(sh).get("NRestarts") == "1" and show(sh).get("ActiveState") == "active",
               timeout=60, what="a restart by the watchdog", log=journal(sh))  # fmt: skip
    # Not the tail: the Python stacks faulthandler dumps on the watchdog's SIGABRT come after these lines.
    log = sh("journalctl -u haproxy-monitor --no-pager | grep -v '  File '")
    assert f"Watchdog timeout (limit {WATCHDOG}s)" in log and "Failed with result 'watchdog'" in log, log
    assert show(sh)["MainPID"] != before["MainPID"]


def test_systemd_does_not_restart_the_monitor_after_a_usage_error(booted):
    sh = booted
    sh("echo MONITOR_LB_PORT=many >> /etc/sysconfig/haproxy-monitor; systemctl restart haproxy-monitor")
    wait_until(lambda: show(sh).get("ActiveState") == "failed", timeout=60, what="the unit failed",
               log=journal(sh))  # fmt: skip
    time.sleep(3)  # RestartSec=2: a restart would have happened by now
    state = show(sh)
    assert state["ActiveState"] == "failed" and state["ExecMainStatus"] == "2", state
    assert "MONITOR_LB_PORT='many'" in journal(sh)()
