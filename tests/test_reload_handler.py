"""The reload handler against a real HAProxy 2.6: start, seamless reload, coalescing, failures, force-stop, exit."""

from __future__ import annotations

import os
import re
import signal
import socket
import statistics
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.testbed.haproxy import FakeApiServer, HaproxyLab

pytestmark = [
    pytest.mark.haproxy,
    pytest.mark.skipif(not os.access("/usr/sbin/haproxy", os.X_OK), reason="needs /usr/sbin/haproxy"),
]

TEMPLATE = Path(__file__).resolve().parents[1] / "templates" / "haproxy.cfg.j2"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pki")


@pytest.fixture
def apis(pki: Path) -> Iterator[list[FakeApiServer]]:
    servers = [FakeApiServer(cert_dir=pki, address=f"127.0.0.{n}") for n in (2, 3, 4)]
    yield servers
    for server in servers:
        server.stop()


def make_lab(tmp_path: Path, **options: float) -> HaproxyLab:
    return HaproxyLab(workdir=tmp_path / "lab", template=TEMPLATE, **options)


def started_pids(lab: HaproxyLab) -> list[int]:
    return [int(m) for m in re.findall(r"started haproxy pid (\d+)", lab.handler_log())]


def state(pid: int) -> str | None:
    """The process's state letter from /proc (R, S, T for stopped, Z for a zombie), None once reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except FileNotFoundError:
        return None


def alive(pid: int) -> bool:
    return state(pid) not in (None, "Z")


def wait_single_master(lab: HaproxyLab, *, other_than: int | None = None, timeout: float = 10) -> int:
    """Wait until exactly one HAProxy master runs (and it is not ``other_than``); return its pid."""

    seen: list[int] = []

    def single() -> bool:
        masters = lab.masters()
        if len(masters) == 1 and masters[0] != other_than and lab.stats() != []:
            seen[:] = masters
            return True
        return False

    lab.wait_until(single, timeout=timeout)
    return seen[0]  # asking again could race with the next change


def hold_connection(lab: HaproxyLab, server: str) -> socket.socket:
    """A client connection through the LB port that stays open (the backend waits for a TLS hello)."""
    before = lab.servers()[server].total_sessions
    client = socket.create_connection(("127.0.0.1", lab.lb_port), timeout=10)
    lab.wait_until(lambda: lab.servers()[server].total_sessions > before, timeout=5)
    return client


def test_the_handler_starts_haproxy_at_boot_from_an_existing_config(
    tmp_path: Path, apis: list[FakeApiServer]
) -> None:
    with make_lab(tmp_path) as lab:
        lab.write_config(lab.render([apis[0].backend("master-0")]))
        lab.start_handler()
        master = wait_single_master(lab)
        assert set(lab.servers()) == {"master-0"}
        assert lab.pid_file.read_text().strip() == str(master)


def test_the_handler_does_not_start_haproxy_from_an_empty_config_and_starts_it_on_reload(
    tmp_path: Path, apis: list[FakeApiServer]
) -> None:
    with make_lab(tmp_path) as lab:
        lab.write_config("")
        lab.start_handler()
        lab.wait_until(lambda: "is missing or empty" in lab.handler_log(), timeout=5)
        assert lab.haproxy_pids() == []
        lab.reload()
        lab.wait_until(lambda: "not starting haproxy" in lab.handler_log(), timeout=5)
        assert lab.haproxy_pids() == []

        lab.write_config(lab.render([apis[0].backend("master-0")]))
        lab.reload()
        wait_single_master(lab)
        assert set(lab.servers()) == {"master-0"}


def test_stale_socket_files_from_a_previous_run_are_replaced(
    tmp_path: Path, apis: list[FakeApiServer]
) -> None:
    with make_lab(tmp_path) as lab:
        for path, kind in ((lab.master_socket, socket.SOCK_STREAM), (lab.log_socket, socket.SOCK_DGRAM)):
            stale = socket.socket(socket.AF_UNIX, kind)
            stale.bind(str(path))
            stale.close()  # leaves the file behind, like a killed container
        lab.write_config(lab.render([apis[0].backend("master-0")]))
        lab.start_handler()  # waits until a new socket (new inode) accepts connections
        assert "removed stale" in lab.handler_log()
        wait_single_master(lab)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(b"<134>hello from a test", str(lab.log_socket))
        lab.wait_until(lambda: b"hello from a test" in lab.haproxy_log_path.read_bytes(), timeout=5)


def test_reload_after_a_config_change_serves_the_new_servers_from_a_new_process(
    tmp_path: Path, apis: list[FakeApiServer]
) -> None:
    with make_lab(tmp_path) as lab:
        lab.write_config(lab.render([apis[0].backend("master-0"), apis[1].backend("master-1")]))
        lab.start_handler()
        old = wait_single_master(lab)
        old_workers = [pid for pid in lab.haproxy_pids() if pid != old]

        lab.write_config(lab.render([apis[1].backend("master-1"), apis[2].backend("master-2")]))
        lab.reload()
        lab.wait_until(lambda: set(lab.servers()) == {"master-1", "master-2"}, timeout=10)
        new = wait_single_master(lab, other_than=old)

        assert new != old
        lab.wait_until(lambda: not alive(old) and not any(alive(w) for w in old_workers), timeout=10)
        assert f"started haproxy pid {new} (old: {old})" in lab.handler_log()
        # The handed-over listener still accepts connections.
        with socket.create_connection(("127.0.0.1", lab.ready_port), timeout=5) as c:
            c.sendall(b"GET /haproxy_ready HTTP/1.0\r\n\r\n")
            assert c.recv(100).split(b" ")[1] == b"200"


def test_reload_time_from_the_reload_line_to_the_new_server_in_show_stat(
    tmp_path: Path, apis: list[FakeApiServer]
) -> None:
    with make_lab(tmp_path) as lab:
        backends = [apis[0].backend("master-0")]
        lab.write_config(lab.render(backends))
        lab.start_handler()
        wait_single_master(lab)
        times = []
        for i in range(1, 13):
            backends.append(apis[1 + i % 2].backend(f"extra-{i}"))
            lab.write_config(lab.render(backends))
            start = time.monotonic()
            lab.reload()
            lab.wait_until(lambda name=f"extra-{i}": name in lab.servers(), timeout=10)
            times.append(time.monotonic() - start)
        p50 = statistics.median(times)
        print(f"\nreload → new server in show stat: p50 {p50 * 1000:.0f} ms, max {max(times) * 1000:.0f} ms")
        assert p50 < 1.0


def test_a_burst_of_twenty_reload_lines_starts_at_most_two_new_processes(
    tmp_path: Path, apis: list[FakeApiServer]
) -> None:
    with make_lab(tmp_path) as lab:
        lab.write_config(lab.render([apis[0].backend("master-0")]))
        lab.start_handler()
        first = wait_single_master(lab)
        lab.write_config(lab.render([apis[0].backend("master-0"), apis[1].backend("master-1")]))

        lab.send_lines(["reload"] * 20)
        lab.wait_until(lambda: "master-1" in lab.servers(), timeout=10)
        last = wait_single_master(lab, other_than=first)
        lab.wait_until(lambda: f"haproxy pid {last} ready" in lab.handler_log(), timeout=10)

        new = [pid for pid in started_pids(lab) if pid != first]
        assert 1 <= len(new) <= 2, lab.handler_log()


def test_a_bad_config_on_reload_keeps_the_old_process_serving(
    tmp_path: Path, apis: list[FakeApiServer]
) -> None:
    with make_lab(tmp_path) as lab:
        good = lab.render([apis[0].backend("master-0")])
        lab.write_config(good)
        lab.start_handler()
        old = wait_single_master(lab)

        lab.write_config(good + "backend broken\n   server x 127.0.0.9:notaport\n")
        lab.reload()
        lab.wait_until(lambda: "reload FAILED" in lab.handler_log(), timeout=10)
        assert lab.masters() == [old]
        assert set(lab.servers()) == {"master-0"}
        with socket.create_connection(("127.0.0.1", lab.ready_port), timeout=5) as c:
            c.sendall(b"GET /haproxy_ready HTTP/1.0\r\n\r\n")
            assert c.recv(100).split(b" ")[1] == b"200"

        # The next good config reloads normally from the old process.
        lab.write_config(lab.render([apis[1].backend("master-1")]))
        lab.reload()
        lab.wait_until(lambda: set(lab.servers()) == {"master-1"}, timeout=10)
        wait_single_master(lab, other_than=old)


def test_old_processes_still_alive_after_the_deadline_are_stopped(
    tmp_path: Path, apis: list[FakeApiServer]
) -> None:
    with make_lab(tmp_path, force_stop_after=0.5, kill_grace=1.0) as lab:
        lab.write_config(lab.render([apis[0].backend("master-0")]))
        lab.start_handler()
        old = wait_single_master(lab)
        client = hold_connection(lab, "master-0")
        with client:
            lab.write_config(lab.render([apis[0].backend("master-0"), apis[1].backend("master-1")]))
            lab.reload()
            lab.wait_until(lambda: "master-1" in lab.servers(), timeout=10)
            # The old worker keeps the long-lived connection, so only the deadline retires it.
            lab.wait_until(lambda: not alive(old), timeout=10)
            assert f"old haproxy pid {old} still alive" in lab.handler_log()
            client.settimeout(5)
            try:
                closed = client.recv(100) == b""
            except ConnectionResetError:
                closed = True
            assert closed, "the old worker must close the held connection when it is stopped"
        wait_single_master(lab, other_than=old)


def test_sigterm_stops_every_haproxy_and_removes_the_sockets(
    tmp_path: Path, apis: list[FakeApiServer]
) -> None:
    with make_lab(tmp_path) as lab:
        lab.write_config(lab.render([apis[0].backend("master-0")]))
        lab.start_handler()
        old = wait_single_master(lab)
        client = hold_connection(lab, "master-0")
        with client:
            lab.reload()  # the old process lingers: it still serves the held connection
            lab.wait_until(lambda: len(started_pids(lab)) == 2, timeout=5)
            new = started_pids(lab)[1]
            lab.wait_until(lambda: f"haproxy pid {new} ready" in lab.handler_log(), timeout=10)
            assert sorted(lab.masters()) == sorted([old, new])
            assert alive(old)
            assert len(lab.haproxy_pids()) == 4

            lab.signal_handler(signal.SIGTERM)
            assert lab.wait_handler_exit(timeout=15) == 0
        assert lab.haproxy_pids() == []
        assert not lab.master_socket.exists()
        assert not lab.log_socket.exists()
        assert "stopped" in lab.handler_log().splitlines()[-1]


def test_clients_that_close_mid_line_send_garbage_or_linger_do_not_break_the_handler(
    tmp_path: Path, apis: list[FakeApiServer]
) -> None:
    with make_lab(tmp_path) as lab:
        lab.write_config(lab.render([apis[0].backend("master-0")]))
        lab.start_handler()
        first = wait_single_master(lab)

        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as cut:
            cut.connect(str(lab.master_socket))
            cut.sendall(b"rel")
            cut.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        lab.send_lines(["status", "x" * 100])
        lab.wait_until(lambda: "ignored unknown command 'status'" in lab.handler_log(), timeout=5)
        lab.wait_until(lambda: "ignored unknown command 'rel'" in lab.handler_log(), timeout=5)
        assert lab.masters() == [first]

        # A client that sends reload and then waits for an answer that never comes holds only itself.
        lingering = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lingering.connect(str(lab.master_socket))
        with lingering:
            lab.write_config(lab.render([apis[0].backend("master-0"), apis[1].backend("master-1")]))
            lingering.sendall(b"reload\n")
            lab.wait_until(lambda: "master-1" in lab.servers(), timeout=10)
            second = wait_single_master(lab, other_than=first)

            lab.write_config(lab.render([apis[1].backend("master-1")]))
            lab.reload()  # from another connection while the first is still open
            lab.wait_until(lambda: set(lab.servers()) == {"master-1"}, timeout=10)
            wait_single_master(lab, other_than=second)


def test_a_reload_after_haproxy_died_starts_a_fresh_one(tmp_path: Path, apis: list[FakeApiServer]) -> None:
    with make_lab(tmp_path) as lab:
        lab.write_config(lab.render([apis[0].backend("master-0")]))
        lab.start_handler()
        dead = wait_single_master(lab)
        os.kill(dead, signal.SIGKILL)
        lab.wait_until(lambda: "no haproxy is running now" in lab.handler_log(), timeout=10)
        lab.wait_until(lambda: lab.haproxy_pids() == [], timeout=10)  # the orphaned worker follows
        lab.reload()
        fresh = wait_single_master(lab, other_than=dead)
        assert f"started haproxy pid {fresh}\n" in lab.handler_log()  # a plain start: no -sf, no -x


def test_a_haproxy_that_dies_before_the_handler_looked_at_it_is_reported_as_dead_not_as_a_failed_reload(
    tmp_path: Path, apis: list[FakeApiServer]
) -> None:
    # The busy machine's worst case made certain: the handler gets no CPU from the moment it starts HAProxy
    # until HAProxy has forked its worker, served and been killed. The wrapper freezes it while the flag
    # exists, then becomes HAProxy (same pid); it runs shell builtins only, so it has no child that the
    # handler could take for a worker.
    freeze = tmp_path / "freeze-the-handler"
    wrapper = tmp_path / "haproxy"
    wrapper.write_text(
        f'#!/bin/sh\nif [ -e "{freeze}" ]; then kill -STOP "$PPID"; fi\nexec /usr/sbin/haproxy "$@"\n'
    )
    wrapper.chmod(0o755)
    with HaproxyLab(workdir=tmp_path / "lab", template=TEMPLATE, haproxy=str(wrapper)) as lab:
        lab.write_config("")
        lab.start_handler()
        handler = lab.handler_pid
        assert handler is not None
        try:
            lab.write_config(lab.render([apis[0].backend("master-0")]))
            freeze.touch()
            lab.reload()
            lab.wait_until(lambda: state(handler) == "T", timeout=10)
            freeze.unlink()
            dead = wait_single_master(lab)
            os.kill(dead, signal.SIGKILL)
            lab.wait_until(lambda: lab.haproxy_pids() == [], timeout=10)  # the orphaned worker follows
        finally:
            freeze.unlink(missing_ok=True)
            os.kill(handler, signal.SIGCONT)
        lab.wait_until(lambda: "no haproxy is running now" in lab.handler_log(), timeout=10)
        assert f"haproxy pid {dead} was killed by SIGKILL" in lab.handler_log()
        assert "reload FAILED" not in lab.handler_log()

        lab.reload()
        fresh = wait_single_master(lab, other_than=dead)
        assert f"started haproxy pid {fresh}\n" in lab.handler_log()


def test_a_new_haproxy_killed_before_it_forks_a_worker_is_a_failed_reload_and_the_old_one_keeps_serving(
    tmp_path: Path, apis: list[FakeApiServer]
) -> None:
    # While the flag exists the wrapper stops itself before it becomes HAProxy, so the kill lands before any
    # worker exists (builtins only: a child of the wrapper would look like a worker to the handler).
    hold = tmp_path / "hold-the-new-haproxy"
    wrapper = tmp_path / "haproxy"
    wrapper.write_text(
        f'#!/bin/sh\nif [ -e "{hold}" ]; then kill -STOP "$$"; fi\nexec /usr/sbin/haproxy "$@"\n'
    )
    wrapper.chmod(0o755)
    with HaproxyLab(workdir=tmp_path / "lab", template=TEMPLATE, haproxy=str(wrapper)) as lab:
        lab.write_config(lab.render([apis[0].backend("master-0")]))
        lab.start_handler()
        old = wait_single_master(lab)
        hold.touch()
        lab.reload()
        lab.wait_until(lambda: len(started_pids(lab)) == 2, timeout=10)
        new = started_pids(lab)[1]
        lab.wait_until(lambda: state(new) == "T", timeout=10)
        hold.unlink()
        os.kill(new, signal.SIGKILL)
        lab.wait_until(lambda: "reload FAILED" in lab.handler_log(), timeout=10)
        assert f"haproxy pid {new} was killed by SIGKILL" in lab.handler_log()
        assert f"still serving: {old}" in lab.handler_log()
        assert "no haproxy is running now" not in lab.handler_log()
        assert lab.masters() == [old]
