"""No exit without cleaning up: the monitor process, real nft in a private network namespace, and signals.

Each test starts the real ``python -m monitor`` inside a throw-away namespace (``ip netns exec``), lets it steer
(a loopback HTTP server plays HAProxy's health endpoint, so the rules go in after one good check), then
stops it and reads nft's ruleset in that namespace: the rules must be gone and the exit code the documented
one (README, ``monitor --help``: 0 for SIGTERM/SIGINT, 128+N for another stop signal N).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.netns import available, run

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(available() is not None, reason=f"netns tests: {available()}"),
]

REPO = Path(__file__).resolve().parent.parent
VIP = "192.0.2.10"
COMMENT = "OCP_API_LB_REDIRECT"
HEALTH_PORT = 9454  # inside the private namespace: cannot collide
# Answers 200 to every GET: HAProxy's /haproxy_monitor as the monitor sees it when HAProxy is healthy.
_HEALTH = r"""
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", int(__import__("sys").argv[1])), H).serve_forever()
"""


def wait_until(predicate: Callable[[], object], *, timeout: float, what: str, poll: float = 0.01) -> float:
    """Poll until ``predicate()`` is truthy; returns when it was seen (monotonic)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        last = predicate()
        if last:
            return time.monotonic()
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        time.sleep(poll)


@dataclass
class Host:
    """One private network namespace with a healthy 'HAProxy' and room for monitor processes."""

    netns: str
    tmp: Path
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def our_rules(self) -> int:
        """Rules carrying the steering comment, in any table of the namespace."""
        listing = json.loads(run(self.netns, "nft", "-j", "list", "ruleset") or '{"nftables": []}')
        return sum(
            1
            for item in listing["nftables"]
            if isinstance(item, dict) and item.get("rule", {}).get("comment") == COMMENT
        )

    def monitor_args(self) -> list[str]:
        """The monitor's command line after ``monitor``: steering after one good check every 100 ms."""
        return [
            str(self.tmp / "kubeconfig"), str(REPO / "templates" / "haproxy.cfg.j2"), str(self.tmp / "haproxy.cfg"),
            "--api-vips", VIP,
            "--check-interval", "100ms",
            "--health-on", "1",
            "--health-off", "1",
            "--health-url", f"http://127.0.0.1:{HEALTH_PORT}/haproxy_monitor",
            "--reload-socket", str(self.tmp / "no-haproxy.sock"),
            "--fallback-server", "https://127.0.0.1:1",
            "--listen", "",
        ]  # fmt: skip

    def start_monitor(self, *, program: tuple[str, ...] = ("-m", "monitor")) -> subprocess.Popen[str]:
        log = open(self.tmp / f"monitor-{len(self.procs)}.log", "w")  # noqa: SIM115 - closed with the process
        argv = [sys.executable, *program, *self.monitor_args()]
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, *argv],  # ip execs the monitor: proc.pid is the monitor
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        log.close()
        proc.log_path = Path(log.name)  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def steering(self) -> subprocess.Popen[str]:
        """A monitor that has installed its rules (both chains)."""
        proc = self.start_monitor()
        wait_until(
            lambda: self.our_rules() == 2 or proc.poll() is not None, timeout=30, what="rules installed"
        )
        assert proc.poll() is None, log_of(proc)
        return proc


def log_of(proc: subprocess.Popen[str]) -> str:
    return Path(proc.log_path).read_text(errors="replace")  # type: ignore[attr-defined]


def caught_signals(pid: int) -> set[int]:
    """The signals the process has handlers for (SigCgt in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            mask = int(line.split()[1], 16)
            return {n for n in range(1, 65) if mask & (1 << (n - 1))}
    return set()


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    netns = f"hm-sig-{os.getpid()}{uuid.uuid4().hex[:6]}"
    run(None, "ip", "netns", "add", netns)
    health = None
    try:
        run(netns, "ip", "link", "set", "lo", "up")
        health = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, "-c", _HEALTH, str(HEALTH_PORT)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        h = Host(netns=netns, tmp=tmp_path_factory.mktemp("signals"))
        yield h
        for proc in h.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    finally:
        if health is not None:
            health.kill()
            health.wait(10)
        subprocess.run(["ip", "netns", "del", netns], capture_output=True, check=False)


@pytest.mark.parametrize(
    ("sig", "code"),
    [
        (signal.SIGTERM, 0),
        (signal.SIGINT, 0),
        (signal.SIGHUP, 128 + signal.SIGHUP),
        (signal.SIGUSR1, 128 + signal.SIGUSR1),
        (signal.SIGUSR2, 128 + signal.SIGUSR2),
        (signal.SIGQUIT, 128 + signal.SIGQUIT),
        (signal.SIGALRM, 128 + signal.SIGALRM),
    ],
    ids=lambda v: v.name if isinstance(v, signal.Signals) else str(v),
)
def test_a_stop_signal_removes_the_steering_rules_and_exits_with_the_documented_code(
    host: Host, sig: signal.Signals, code: int
) -> None:
    proc = host.steering()
    start = time.monotonic()
    proc.send_signal(sig)
    assert proc.wait(10) == code, log_of(proc)[-3000:]
    took = time.monotonic() - start
    assert host.our_rules() == 0, "rules left steering traffic into a HAProxy nobody watches"
    log = log_of(proc)
    assert f"stopping reason={sig.name}" in log and "steering rules removed on shutdown" in log, log[-3000:]
    assert took < 2.0, f"{sig.name} took {took:.2f}s to serve"


def test_sigpipe_and_sigxfsz_are_ignored_and_the_monitor_keeps_steering(host: Host) -> None:
    proc = host.steering()
    proc.send_signal(signal.SIGPIPE)
    proc.send_signal(signal.SIGXFSZ)
    # Had either ended it, SIGTERM would find it dead and the exit code would name that signal instead.
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0, log_of(proc)[-3000:]
    assert host.our_rules() == 0


def test_a_stop_signal_during_start_up_removes_rules_an_earlier_run_left_and_exits_cleanly(
    host: Host,
) -> None:
    left = host.steering()
    left.kill()  # SIGKILL cannot be caught: its rules stay, as after an OOM kill
    left.wait(10)
    assert host.our_rules() == 2
    proc = host.start_monitor()
    # As soon as the process handles stop signals (long before it has built its adapters and says "started"):
    wanted = {signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1}
    wait_until(
        lambda: proc.poll() is not None or wanted <= caught_signals(proc.pid),
        timeout=20,
        what="the monitor handling stop signals",
        poll=0.001,
    )
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0, log_of(proc)[-3000:]
    log = log_of(proc)
    assert " started " not in log, "the signal was meant to arrive during start-up"
    assert "stopping reason=SIGTERM" in log and "during=start-up" in log, log[-3000:]
    assert host.our_rules() == 0, "the rules a killed run left must not outlive a stopped one"


# The loop meets an error it cannot survive: a library calling sys.exit() in the middle of steering (SystemExit
# is no Exception, so the loop's guard lets it through). The process must still remove its rules first.
_FATAL = r"""
import sys
from pathlib import Path
from monitor import logs
from monitor.adapters.nftables import NftSteering
from monitor.app import run
from monitor.cli import build_parser, settings_from_args
from monitor.steering.rules import SteeringSpec

class ExitsAfterInstalling(NftSteering):
    def ensure(self):
        result = super().ensure()
        if result.rules:
            sys.exit("a library gave up")
        return result

parser = build_parser()
settings = settings_from_args(parser.parse_args(sys.argv[1:]), parser)
spec = SteeringSpec(vips=settings.api_vips, api_port=settings.api_port, lb_port=settings.lb_port)

def ready(monitor):  # called before the loop runs: its steering adapter is this one
    monitor.steering = ExitsAfterInstalling(spec=spec, nft_bin=settings.nft_bin)

logs.setup()
raise SystemExit(run(settings, ready=ready))
"""


def test_an_error_the_loop_cannot_survive_removes_the_rules_before_the_process_exits(host: Host) -> None:
    proc = host.start_monitor(program=("-c", _FATAL))
    assert proc.wait(30) == 70, log_of(proc)[-3000:]
    log = log_of(proc)
    assert "the loop cannot go on" in log and "Traceback" in log, log[-3000:]
    assert "steering rules removed on shutdown" in log, "the rules were in when the error struck"
    assert host.our_rules() == 0
