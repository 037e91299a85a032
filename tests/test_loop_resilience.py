"""The loop keeps serving whatever happens: unexpected exceptions and failed writes, on a running loop thread.

The loop runs as in production (its own thread, the real clock, real files, real HAProxy validation, a real
reload socket); a failure is injected through a real input or an adapter subclass whose method raises (a bug
the port's contract rules out), and the test shows the loop logs it with its traceback and goes on.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from monitor.adapters.config_writer import ConfigWriter
from monitor.adapters.filewatch import FileWatcher
from monitor.adapters.nftables import NftSteering
from monitor.adapters.reloader import Reloader
from monitor.adapters.stats import StatsSource
from monitor.app import _guarded, _poll_haproxy
from monitor.events import Event, HealthObserved, Objects, StatsObserved, Stop
from monitor.logs import Log, UnexpectedLog
from monitor.loop import Monitor
from monitor.model import LBConfig
from monitor.render import Renderer
from monitor.settings import Settings
from monitor.steering.rules import SteeringSpec
from tests.fakehttp import FakeHTTP
from tests.test_loop import NODES, node, servers
from tests.test_reloader import LineServer

REPO = Path(__file__).resolve().parent.parent
CHANGED = (*NODES[:2], node("m3", "192.0.2.14"))


def wait_until(predicate: Callable[[], object], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except OSError as exc:  # a file being replaced or a file system being remounted: look again
            last = exc
        if last and not isinstance(last, Exception):
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def internal_errors(m: Monitor) -> float:
    return m.metrics.registry.get_sample_value("haproxy_monitor_internal_errors_total") or 0.0


@dataclass
class Live:
    """A Monitor running its loop on a thread, stopped (Stop event) at the end of the test."""

    tmp: Path
    haproxy_bin: str
    cfg_dir: Path
    threads: list[tuple[Monitor, threading.Thread]] = field(default_factory=list)

    def start(self, **parts: Any) -> Monitor:
        template = self.tmp / "haproxy.cfg.j2"
        shutil.copy(REPO / "templates" / "haproxy.cfg.j2", template)
        cfg = self.cfg_dir / "haproxy.cfg"
        sock = self.tmp / "master.sock"
        settings = Settings(
            kubeconfig=self.tmp / "kubeconfig",
            template=template,
            cfg=cfg,
            api_vips=("192.0.2.10",),
            reload_socket=sock,
            settle=0.05,
            settle_max=0.5,
            check_interval=0.2,
            health_on=1,
            health_off=1,
        )
        if not sock.exists():
            LineServer(sock)
        monitor = Monitor(
            settings=settings,
            renderer=parts.pop("renderer", None) or Renderer(template),
            writer=parts.pop("writer", None) or ConfigWriter(cfg=cfg, haproxy_bin=self.haproxy_bin),
            reloader=Reloader(socket_path=sock, clock=time.monotonic),
            networks=lambda: [],
            **parts,
        )
        thread = threading.Thread(target=monitor.run, name="loop", daemon=True)
        thread.start()
        self.threads.append((monitor, thread))
        return monitor

    def close(self) -> None:
        for monitor, thread in self.threads:
            monitor.post(Stop("test over"))
            thread.join(10)


@pytest.fixture
def live(tmp_path: Path, haproxy_bin: str) -> Iterator[Live]:
    cfg_dir = tmp_path / "etc"
    cfg_dir.mkdir()
    world = Live(tmp=tmp_path, haproxy_bin=haproxy_bin, cfg_dir=cfg_dir)
    yield world
    world.close()


def serving(m: Monitor, cfg: Path, names: list[str], *, timeout: float = 10.0) -> None:
    wait_until(
        lambda: cfg.exists() and servers(cfg) == names, timeout=timeout, what=f"HAProxy config {names}"
    )


# -- unexpected exceptions: logged with their traceback, state kept, the loop goes on -------------------------
def test_a_node_whose_status_is_not_an_object_does_not_stop_the_loop(live: Live) -> None:
    m = live.start()
    cfg = live.cfg_dir / "haproxy.cfg"
    m.post(Objects(NODES))
    serving(m, cfg, ["m0", "m1", "m2"])
    # Discovery reads status.addresses of every node: a string there raised AttributeError in the loop thread,
    # which ended it (exit 1 and a crash loop in production).
    m.post(Objects((*NODES, {"metadata": {"name": "m9"}, "status": "not an object"})))
    wait_until(m.queue.empty, timeout=5, what="the loop taking the malformed set")
    m.post(Objects(CHANGED))
    serving(m, cfg, ["m0", "m1", "m3"])
    assert live.threads[0][1].is_alive()


class BrokenSteering(NftSteering):
    """Its contract says it never raises; this one does, as a bug in it would."""

    def ensure(self) -> Any:
        raise RuntimeError("steering bug")

    remove = ensure


def test_an_exception_handling_an_event_is_logged_with_its_traceback_and_the_loop_goes_on(
    live: Live, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="monitor")
    spec = SteeringSpec(vips=("192.0.2.10",), api_port=6443, lb_port=9445)
    m = live.start(steering=BrokenSteering(spec=spec, nft_bin="/nonexistent/nft"))
    cfg = live.cfg_dir / "haproxy.cfg"
    for _ in range(3):
        m.post(HealthObserved(ok=True))
    m.post(Objects(NODES))
    serving(m, cfg, ["m0", "m1", "m2"])
    wait_until(lambda: internal_errors(m) >= 3, timeout=5, what="three failures counted")
    logged = [r for r in caplog.records if "unexpected error handling HealthObserved" in r.getMessage()]
    assert len(logged) == 1, "the same failure again is counted, not logged again"
    assert logged[0].exc_info is not None and logged[0].exc_info[1] is not None
    assert "steering bug" in str(logged[0].exc_info[1])
    m.post(Objects(CHANGED))
    serving(m, cfg, ["m0", "m1", "m3"])
    assert m.health.state is True, "the health state the failing event brought is kept"


class FailsOnce(ConfigWriter):
    """The first write raises what no writer should (a bug); later ones work."""

    failed = False

    def write(self, text: str, *, mode: int = 0o644) -> bool:
        if not self.failed:
            self.failed = True
            raise KeyError("writer bug")
        return super().write(text, mode=mode)


def test_an_exception_while_applying_is_retried_so_the_change_still_lands_without_another_event(
    live: Live,
) -> None:
    cfg = live.cfg_dir / "haproxy.cfg"
    m = live.start(writer=FailsOnce(cfg=cfg, haproxy_bin=live.haproxy_bin))
    m.post(Objects(NODES))
    serving(m, cfg, ["m0", "m1", "m2"])
    wait_until(lambda: m.status.readyz()[0], timeout=5, what="ready once the retry landed")
    assert internal_errors(m) == 1


class BrokenStats(StatsSource):
    def server_states(self, *, timeout: float) -> Any:
        raise RuntimeError("stats reader bug")


def test_the_haproxy_poller_keeps_polling_when_a_read_raises_unexpectedly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="monitor")
    with FakeHTTP("200").running() as health:
        events = poll(tmp_path, health.url, BrokenStats(cfg=tmp_path / "haproxy.cfg"))
    assert sum(isinstance(e, HealthObserved) and e.ok for e in events) >= 3
    logged = [r for r in caplog.records if r.exc_info and "statistics" in r.getMessage()]
    assert len(logged) == 1, [r.getMessage() for r in caplog.records]


def poll(tmp_path: Path, url: str, stats: StatsSource) -> list[Event]:
    """Run the poller until it has posted three good health samples; what it posted."""
    settings = Settings(
        kubeconfig=tmp_path / "kubeconfig",
        template=tmp_path / "t.j2",
        cfg=tmp_path / "haproxy.cfg",
        api_vips=("192.0.2.10",),
        check_interval=0.02,
        health_url=url,
    )
    events: list[Event] = []
    posts: list[tuple[Event, ...]] = []
    stop = threading.Event()

    def post_all(*posted: Event) -> None:
        posts.append(posted)
        events.extend(posted)

    thread = threading.Thread(
        target=_poll_haproxy, args=(settings, post_all, stop, stats, UnexpectedLog(Log("health")))
    )
    thread.start()
    try:
        wait_until(
            lambda: sum(isinstance(e, HealthObserved) and e.ok for e in events) >= 3,
            timeout=10,
            what="three health samples",
        )
    finally:
        stop.set()
        thread.join(5)
    # Each cycle's health sample and stats read arrive in one post: the loop wakes once per cycle.
    assert {tuple(type(e) for e in p) for p in posts} == {(HealthObserved, StatsObserved)}, posts
    return events


def test_a_failing_file_watch_callback_is_logged_and_the_next_change_still_calls_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="monitor")
    template = tmp_path / "t.j2"
    template.write_text("a")
    calls: list[int] = []

    def on_template() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("callback bug")

    unexpected = UnexpectedLog(Log("files"))
    files = FileWatcher(
        on_template=_guarded(on_template, "on a template change", unexpected),
        on_credentials=lambda: None,
        debounce=0.01,
    )
    files.set_files(template=template, credentials=[])
    files.start()
    try:
        template.write_text("b")
        wait_until(lambda: len(calls) == 1, timeout=10, what="the first callback")
        template.write_text("c")
        wait_until(lambda: len(calls) == 2, timeout=10, what="the second callback")
    finally:
        files.stop()
    logged = [r for r in caplog.records if r.exc_info and "template change" in r.getMessage()]
    assert len(logged) == 1 and "callback bug" in str(logged[0].exc_info[1])  # type: ignore[index]


# -- a failed write is retried with backoff until it lands ------------------------------------------------
@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A tiny real file system we can fill up or make read-only (needs root, which CI has)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True)
    if proc.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"cannot mount a tmpfs: {proc.stderr!r}")
        pytest.skip("cannot mount a tmpfs here")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def write_errors(m: Monitor) -> float:
    return m.metrics.registry.get_sample_value("haproxy_monitor_write_errors_total") or 0.0


@pytest.mark.parametrize("fault", ["read-only file system", "no space left on device"])
def test_a_failed_write_is_retried_with_backoff_until_the_change_lands_without_any_other_event(
    live: Live, tmpfs: Path, fault: str
) -> None:
    live.cfg_dir = tmpfs
    cfg = tmpfs / "haproxy.cfg"
    m = live.start()
    m.post(Objects(NODES))
    serving(m, cfg, ["m0", "m1", "m2"])
    filler = tmpfs / "filler"
    if fault == "read-only file system":
        subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    else:
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(fd, b"\0" * 1024):
                pass
        except OSError:
            pass  # full: exactly what we wanted
        finally:
            os.close(fd)
    try:
        m.post(Objects(CHANGED))
        wait_until(
            lambda: fault in (m.status.config_error or ""), timeout=10, what=f"the write failing: {fault}"
        )
        wait_until(lambda: write_errors(m) >= 3, timeout=10, what="the write being retried while it fails")
        assert m.status.readyz()[0] is False
    finally:
        if fault == "read-only file system":
            subprocess.run(["mount", "-o", "remount,rw", str(tmpfs)], check=True)
        else:
            filler.unlink()
    # Nothing else happens from here on: the retry alone brings the change in.
    serving(m, cfg, ["m0", "m1", "m3"])
    # The file is renamed into place a moment before the loop records the success: wait for the record.
    wait_until(lambda: m.status.readyz()[0], timeout=5, what="ready again")
    assert m.status.config_error is None
    assert isinstance(m.status.applied, LBConfig) and len(m.status.applied.backends) == 3
