"""Server changes reach a real HAProxy 2.6 over its admin socket: no reload, long-lived connections kept."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from monitor.adapters.config_writer import ConfigWriter
from monitor.adapters.reloader import Reloader
from monitor.adapters.runtime_api import RuntimeApi
from monitor.events import Stop
from monitor.inbox import Inbox
from monitor.model import Backend
from monitor.pipeline import ApplyResult, Pipeline
from monitor.render import Renderer
from monitor.testbed.haproxy import FakeApiServer, HaproxyLab

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.haproxy


@dataclass
class World:
    lab: HaproxyLab
    pipeline: Pipeline
    runtime: RuntimeApi
    api: list[FakeApiServer]  # three API servers on 127.0.0.2, .3, .4

    def backend(self, host: str, index: int) -> Backend:
        return self.api[index].backend(host)

    def apply(self, *backends: Backend) -> ApplyResult:
        result = self.pipeline.apply(self.lab.lbconfig(backends))
        assert result.stage_failed is None, result.error
        return result

    def served(self) -> dict[str, str]:
        """HAProxy's servers of ``masters``: name → address:port."""
        return {name: row.address for name, row in self.lab.servers().items()}

    def wait_served(self, *backends: Backend, timeout: float = 15) -> None:
        want = {b.host: f"{b.address}:{b.port}" for b in backends}
        self.lab.wait_until(lambda: self.served() == want, timeout=timeout)

    def wait_up(self, name: str) -> None:
        """Its first check passed: HAProxy sends it traffic."""
        self.lab.wait_until(lambda: self.lab.servers()[name].status == "UP", timeout=15)


@pytest.fixture
def world(tmp_path: Path, haproxy_bin: str) -> Iterator[World]:
    # The shipped template with a faster check, so that a new server is UP within about a second.
    template = tmp_path / "haproxy.cfg.j2"
    template.write_text(
        (REPO / "templates" / "haproxy.cfg.j2").read_text().replace("inter 5s", "inter 300ms")
    )
    with contextlib.ExitStack() as stack:
        lab = stack.enter_context(HaproxyLab(workdir=tmp_path / "lab", template=template, kill_grace=1))
        api = [
            stack.enter_context(FakeApiServer(cert_dir=tmp_path / "pki", address=f"127.0.0.{i}"))
            for i in (2, 3, 4)
        ]
        runtime = RuntimeApi(drain_timeout=2.0)
        pipeline = Pipeline(
            template=Renderer(lab.template_path),
            writer=ConfigWriter(cfg=lab.cfg_path, haproxy_bin=haproxy_bin),
            reloader=Reloader(socket_path=lab.master_socket, clock=time.monotonic),
            clock=time.monotonic,
            runtime=runtime,
        )
        yield World(lab=lab, pipeline=pipeline, runtime=runtime, api=api)


def started(world: World, *backends: Backend) -> list[int]:
    """HAProxy serving ``backends`` from the file; its master's pid."""
    world.lab.write_config(world.lab.render(backends))
    world.lab.start_handler()
    world.wait_served(*backends)
    for b in backends:
        world.wait_up(b.host)
    return world.lab.masters()


def _tls() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    return context


def stream(lab: HaproxyLab) -> ssl.SSLSocket:
    """A TLS connection through HAProxy to an API server, handshake done, then left idle (a watch)."""
    raw = socket.create_connection(("127.0.0.1", lab.lb_port), timeout=10)
    return _tls().wrap_socket(raw)


def answers(conn: ssl.SSLSocket) -> bool:
    """The connection still reaches an API server: a request on it is answered 200."""
    try:
        conn.sendall(b"GET /readyz HTTP/1.0\r\n\r\n")
        return conn.recv(64).startswith(b"HTTP/1.0 200")
    except OSError:
        return False


def closed(conn: ssl.SSLSocket) -> bool:
    """The idle connection was cut (the servers send no data unasked; TLS 1.3 tickets are not data)."""
    conn.setblocking(False)
    try:
        return conn.recv(1) == b""
    except (ssl.SSLWantReadError, BlockingIOError):
        return False
    except OSError:
        return True
    finally:
        conn.setblocking(True)


def on(world: World, name: str) -> ssl.SSLSocket:
    """A long-lived connection that HAProxy put on server ``name`` (round robin: a few tries at most)."""

    def total() -> int:
        return sum(s.total_sessions for s in world.lab.servers().values())

    for _ in range(8):
        before, everyone = world.lab.servers()[name].total_sessions, total()
        conn = stream(world.lab)
        world.lab.wait_until(lambda: total() > everyone, timeout=5)  # noqa: B023 (waited on at once)
        if world.lab.servers()[name].total_sessions > before:
            return conn
    raise AssertionError(f"no connection landed on {name}")


def test_a_new_master_is_served_without_a_reload_and_a_long_lived_connection_survives(world: World) -> None:
    m0, m1 = world.backend("m0", 0), world.backend("m1", 1)
    masters = started(world, m0)
    watch = stream(world.lab)
    result = world.apply(m0, m1)
    assert result.runtime_applied and result.reload is None
    world.wait_up("m1")
    assert world.lab.masters() == masters  # the same HAProxy: nothing reloaded
    assert answers(watch)
    # The new server takes new connections (round robin over two).
    before = world.lab.servers()["m1"].total_sessions
    for _ in range(2):
        assert answers(stream(world.lab))
    assert world.lab.servers()["m1"].total_sessions > before


def test_an_address_change_is_taken_at_runtime_and_the_file_agrees(world: World) -> None:
    m0, m1, moved = world.backend("m0", 0), world.backend("m1", 1), world.backend("m1", 2)
    masters = started(world, m0, m1)
    watch = on(world, "m0")
    result = world.apply(m0, moved)
    assert result.runtime_applied
    world.wait_served(m0, moved)
    assert world.lab.masters() == masters and answers(watch)
    assert f"{moved.address}:{moved.port}" in world.lab.cfg_path.read_text()


def test_a_removed_master_loses_its_connections_only_after_the_drain_deadline(world: World) -> None:
    m0, m1 = world.backend("m0", 0), world.backend("m1", 1)
    masters = started(world, m0, m1)
    kept, doomed = on(world, "m0"), on(world, "m1")
    done: list[ApplyResult] = []
    worker = threading.Thread(target=lambda: done.append(world.apply(m0)))
    worker.start()
    try:
        world.lab.wait_until(lambda: world.lab.servers()["m1"].status == "DRAIN", timeout=10)
        assert not closed(doomed)  # draining: its connection is still there
    finally:
        worker.join(timeout=30)
    (result,) = done
    assert result.runtime_applied and result.runtime is not None and result.runtime.outcome is not None
    assert result.runtime.outcome.drains[0] >= world.runtime.drain_timeout
    world.lab.wait_until(lambda: closed(doomed), timeout=5)
    assert world.served() == {"m0": f"{m0.address}:{m0.port}"}
    assert world.lab.masters() == masters and answers(kept)


def restart(world: World) -> None:
    """HAProxy stopped and started again from the file (as after a container restart)."""
    for pid in world.lab.masters():
        os.kill(pid, signal.SIGTERM)
    world.lab.wait_until(lambda: not world.lab.haproxy_pids(), timeout=15)
    world.lab.reload()
    world.lab.wait_until(lambda: bool(world.lab.masters()), timeout=15)


def test_a_haproxy_restarted_after_runtime_changes_and_between_two_comes_up_with_the_same_servers(
    world: World,
) -> None:
    m0, m1, m2 = world.backend("m0", 0), world.backend("m1", 1), world.backend("m2", 2)
    started(world, m0, m1)
    assert world.apply(m0, world.backend("m1", 2), m2).runtime_applied
    before = world.served()
    restart(world)
    world.lab.wait_until(lambda: world.served() == before, timeout=15)
    # The second change starts from what the restarted HAProxy read from the file.
    masters = world.lab.masters()
    assert world.apply(m1, m2).runtime_applied
    world.wait_served(m1, m2)
    assert world.lab.masters() == masters


def test_without_a_reachable_admin_socket_the_change_reloads_and_serves_the_new_set(world: World) -> None:
    m0, m1 = world.backend("m0", 0), world.backend("m1", 1)
    masters = started(world, m0)
    world.pipeline.runtime_socket = world.lab.workdir / "no-such.sock"
    result = world.apply(m0, m1)
    assert result.runtime is not None and not result.runtime.applied
    assert result.runtime.reason == "admin socket unreachable"
    assert result.reload is not None and result.reload.sent
    world.wait_served(m0, m1)
    world.lab.wait_until(lambda: world.lab.masters() != masters, timeout=15)


def test_an_add_server_haproxy_refuses_falls_back_to_a_reload_with_the_right_servers(world: World) -> None:
    # 'cookie' is fine in a file but not accepted for dynamic servers by HAProxy 2.6.
    text = world.lab.template_path.read_text().replace("rise 1", "rise 1 cookie {{ backend.Host }}")
    world.lab.template_path.write_text(text)
    world.pipeline.load_template()
    m0, m1 = world.backend("m0", 0), world.backend("m1", 1)
    masters = started(world, m0)
    result = world.apply(m0, m1)
    assert result.runtime is not None and result.runtime.reason == "add server refused"
    assert "not accepted for dynamic server" in result.runtime.detail
    assert result.reload is not None and result.reload.sent
    world.lab.wait_until(lambda: world.lab.masters() != masters, timeout=15)
    world.wait_served(m0, m1)


def test_a_template_edit_arriving_with_a_server_change_reloads(world: World) -> None:
    m0, m1 = world.backend("m0", 0), world.backend("m1", 1)
    masters = started(world, m0)
    text = world.lab.template_path.read_text().replace("timeout queue        1m", "timeout queue        2m")
    world.lab.template_path.write_text(text)
    world.pipeline.load_template()
    result = world.apply(m0, m1)
    assert result.runtime is not None and result.runtime.reason == "not only servers changed"
    assert result.reload is not None and result.reload.sent
    world.lab.wait_until(lambda: world.lab.masters() != masters, timeout=15)
    world.wait_served(m0, m1)


def ask(lab: HaproxyLab, command: str) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(lab.admin_socket))
        s.sendall(command.encode() + b"\n")
        s.shutdown(socket.SHUT_WR)
        return b"".join(iter(lambda: s.recv(65536), b"")).decode()


def reload_with_template_edit(world: World, *backends: Backend) -> ApplyResult:
    text = world.lab.template_path.read_text().replace("timeout queue        1m", "timeout queue        2m")
    world.lab.template_path.write_text(text)
    world.pipeline.load_template()
    masters = world.lab.masters()
    result = world.apply(*backends)
    assert result.reload is not None and result.reload.sent and result.state_error is None
    # The old HAProxy gone: the admin socket now answers for the new one.
    world.lab.wait_until(lambda: len(new := world.lab.masters()) == 1 and new != masters, timeout=15)
    return result


def test_a_master_whose_checks_failed_stays_down_across_a_reload(world: World) -> None:
    m0, m1 = world.backend("m0", 0), world.backend("m1", 1)
    started(world, m0, m1)
    world.api[1].ready = False
    world.lab.wait_until(lambda: world.lab.servers()["m1"].status == "DOWN", timeout=10)
    # Slow checks after the reload: a DOWN seen at once comes from the state file, not from three failed checks.
    slow = world.lab.template_path.read_text().replace("inter 300ms", "inter 60s")
    world.lab.template_path.write_text(slow)
    reload_with_template_edit(world, m0, m1)
    servers = world.lab.servers()
    assert servers["m1"].status == "DOWN" and servers["m0"].status == "UP"


def test_a_server_given_another_port_by_a_reload_is_served_on_the_new_port_despite_the_state_file(
    world: World, tmp_path: Path
) -> None:
    m0, m1 = world.backend("m0", 0), world.backend("m1", 1)
    started(world, m0, m1)
    with FakeApiServer(cert_dir=tmp_path / "pki", address=m1.address) as elsewhere:
        moved = elsewhere.backend("m1")
        reload_with_template_edit(world, m0, moved)
        world.wait_served(m0, moved)
        world.wait_up("m1")


def test_a_stop_queued_during_a_drain_cuts_it_short(world: World) -> None:
    # Steering must be removed promptly on SIGTERM: a drain does not hold the loop once a Stop is queued.
    m0, m1 = world.backend("m0", 0), world.backend("m1", 1)
    started(world, m0, m1)
    held = on(world, "m1")  # a session that would hold the drain for its whole deadline
    world.runtime.drain_timeout = 60.0
    inbox = Inbox()
    world.pipeline.hurry = inbox.stop_queued
    inbox.put(Stop("SIGTERM"))
    start = time.monotonic()
    result = world.apply(m0)
    assert result.runtime_applied and time.monotonic() - start < 10
    assert world.served() == {"m0": f"{m0.address}:{m0.port}"}
    world.lab.wait_until(lambda: closed(held), timeout=5)


def test_a_run_that_starts_on_a_file_haproxy_does_not_serve_reloads_it(world: World):
    # An earlier run was killed between its rename and its reload: the file names m1, HAProxy still serves m0.
    # The new run renders exactly the file's bytes, so nothing is written; HAProxy must still be brought to it.
    old, new = world.backend("m0", 0), world.backend("m1", 1)
    started(world, old)
    world.lab.write_config(world.lab.render((new,)))
    result = world.apply(new)
    assert result.unchanged
    assert result.start_reload is not None and "does not run the live file's servers" in result.start_reload
    assert result.reload is not None and result.reload.sent
    world.wait_served(new)


def test_a_run_that_starts_on_the_file_haproxy_serves_sends_no_reload(world: World):
    served = world.backend("m0", 0)
    masters = started(world, served)
    result = world.apply(served)
    assert result.unchanged and result.start_reload is None and result.reload is None
    assert world.lab.masters() == masters
