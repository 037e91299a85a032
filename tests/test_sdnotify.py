"""systemd's Type=notify and watchdog: the monitor's datagrams on a real unix socket, as systemd receives them."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.adapters.sdnotify import SystemdNotifier

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket standing in for systemd's notification socket."""
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(30)
        yield sock, path


def test_ready_and_watchdog_reach_a_path_socket_and_an_abstract_one(notify_socket):
    sock, path = notify_socket
    notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"})
    assert notifier is not None and notifier.watchdog == 2.0
    assert notifier.ready(status="up")
    assert sock.recv(4096) == b"READY=1\nSTATUS=up"
    notifier.alive()
    assert sock.recv(4096) == b"WATCHDOG=1"
    name = f"@hm-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as abstract:
        abstract.bind("\0" + name[1:])
        abstract.settimeout(5)
        assert SystemdNotifier(name).stopping()
        assert abstract.recv(4096) == b"STOPPING=1"


def test_the_watchdog_is_pinged_at_most_four_times_per_period_however_often_the_loop_turns(notify_socket):
    sock, path = notify_socket
    now = [100.0]
    notifier = SystemdNotifier(path, watchdog=4.0, clock=lambda: now[0])
    sent = 0
    for _ in range(100):  # 100 loop iterations over 5 s
        notifier.alive()
        now[0] += 0.05
    sock.settimeout(0.2)
    try:
        while sock.recv(4096) == b"WATCHDOG=1":
            sent += 1
    except TimeoutError:
        pass
    assert sent == 5  # at 0, 1, 2, 3, 4 s


def test_without_notify_socket_or_for_another_pid_systemd_is_not_told_anything():
    assert SystemdNotifier.from_environ({}) is None
    other = SystemdNotifier.from_environ(
        {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}
    )
    assert other is not None and other.watchdog is None and other.heartbeat_every is None


def test_a_missing_socket_is_a_dropped_message_not_an_error(tmp_path):
    assert SystemdNotifier(str(tmp_path / "gone.sock"), watchdog=1.0).ready() is False


def test_the_main_job_says_ready_feeds_the_watchdog_from_its_loop_and_says_stopping_on_sigterm(
    notify_socket, tmp_path
):
    sock, path = notify_socket
    watchdog = 4.0
    argv = [
        sys.executable, "-m", "monitor",
        str(tmp_path / "kubeconfig"), str(REPO / "templates" / "haproxy.cfg.j2"), str(tmp_path / "haproxy.cfg"),
        "--api-vips", "192.0.2.10", "--no-steering", "--listen", "",
        "--reload-socket", str(tmp_path / "no-haproxy.sock"), "--fallback-server", "https://127.0.0.1:1",
    ]  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "NOTIFY_SOCKET": path,
        "WATCHDOG_USEC": str(int(watchdog * 1e6)),
    }
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert sock.recv(4096).startswith(b"READY=1\n")
        seen = [time.monotonic()]
        # The default check interval is 6 s: the pings come faster because the loop wakes for the watchdog.
        while len(seen) < 5:
            assert sock.recv(4096) == b"WATCHDOG=1"
            seen.append(time.monotonic())
        gaps = [b - a for a, b in itertools.pairwise(seen)]
        assert max(gaps) < watchdog, gaps
        assert max(gaps[1:]) < watchdog / 2, (
            gaps
        )  # after the first iteration: every quarter period, give or take
        proc.send_signal(signal.SIGTERM)
        assert sock.recv(4096) == b"STOPPING=1"
        assert proc.wait(timeout=30) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        proc.kill()
        proc.wait()
