"""A reload is confirmed: our handler answers one line per reload with its outcome; silence is "unconfirmed"."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.adapters.reloader import Reloader
from monitor.adapters.runtime_api import serving_pid
from monitor.testbed.haproxy import FakeApiServer, HaproxyLab
from tests.test_reloader import LineServer

pytestmark = pytest.mark.haproxy
TEMPLATE = Path(__file__).resolve().parents[1] / "templates" / "haproxy.cfg.j2"


@pytest.fixture
def lab(tmp_path: Path, haproxy_bin: str) -> Iterator[tuple[HaproxyLab, FakeApiServer]]:
    with (
        HaproxyLab(workdir=tmp_path / "lab", template=TEMPLATE, kill_grace=1) as the_lab,
        FakeApiServer(cert_dir=tmp_path / "pki", address="127.0.0.2") as api,
    ):
        yield the_lab, api


def outcome(reloader: Reloader, *, timeout: float = 15) -> str:
    """The delivered reload's outcome, polled the way the loop does (never blocking)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = reloader.confirmation()
        if answer is not None:
            return answer
        time.sleep(0.01)
    raise AssertionError("no outcome")


def deliver(reloader: Reloader) -> str:
    reloader.request()
    assert reloader.attempt() is True, reloader.last_error
    return outcome(reloader)


def test_a_reload_that_starts_a_new_haproxy_is_answered_ok_with_its_pid(lab) -> None:
    the_lab, api = lab
    the_lab.write_config(the_lab.render([api.backend("m0")]))
    the_lab.start_handler()
    the_lab.wait_until(lambda: "m0" in the_lab.servers(), timeout=10)
    answer = deliver(Reloader(socket_path=the_lab.master_socket, clock=time.monotonic))
    assert answer.startswith("reload ok: haproxy pid ")
    pid = int(answer.split()[4])
    the_lab.wait_until(lambda: the_lab.masters() == [pid], timeout=10)


def test_a_config_haproxy_refuses_at_reload_is_answered_failed(lab) -> None:
    the_lab, api = lab
    good = the_lab.render([api.backend("m0")])
    the_lab.write_config(good)
    the_lab.start_handler()
    the_lab.wait_until(lambda: "m0" in the_lab.servers(), timeout=10)  # the first HAProxy read the good file
    old = the_lab.masters()
    the_lab.write_config(good + "backend broken\n   server x 127.0.0.9:notaport\n")
    answer = deliver(Reloader(socket_path=the_lab.master_socket, clock=time.monotonic))
    assert answer.startswith("reload failed: ") and f"still serving: {old[0]}" in answer


def test_two_reload_lines_on_one_connection_get_two_answers(lab) -> None:
    the_lab, api = lab
    the_lab.write_config(the_lab.render([api.backend("m0")]))
    the_lab.start_handler()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(15)
        s.connect(str(the_lab.master_socket))
        s.sendall(b"reload\nreload\n")
        s.shutdown(socket.SHUT_WR)
        lines = b"".join(iter(lambda: s.recv(4096), b"")).decode().splitlines()
    assert len(lines) == 2 and all(line.startswith("reload ok: ") for line in lines)


def test_a_handler_that_answers_nothing_leaves_the_reload_unconfirmed(tmp_path: Path) -> None:
    # The reference's socat loop reads the line and closes the connection without a word.
    server = LineServer(tmp_path / "m.sock")
    try:
        answer = deliver(Reloader(socket_path=server.path, clock=time.monotonic))
    finally:
        server.close()
    assert answer.startswith("reload unconfirmed: ")


class SilentRelay(LineServer):
    """An older reload handler: it passes each ``reload`` on to the real one and answers nothing."""

    def __init__(self, path: Path, lab: HaproxyLab) -> None:
        self.lab = lab
        super().__init__(path)

    def _serve(self) -> None:
        while not self.closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                if b"reload" in conn.recv(1024):
                    self.lab.reload()


def test_behind_a_handler_that_answers_nothing_a_new_haproxy_on_the_admin_socket_confirms_the_reload(
    lab, tmp_path: Path
) -> None:
    the_lab, api = lab
    the_lab.write_config(the_lab.render([api.backend("m0")]))
    the_lab.start_handler()
    the_lab.wait_until(lambda: "m0" in the_lab.servers(), timeout=10)
    relay = SilentRelay(tmp_path / "old-handler.sock", the_lab)
    try:
        reloader = Reloader(
            socket_path=relay.path,
            clock=time.monotonic,
            serving=lambda: serving_pid(the_lab.admin_socket),
        )
        answer = deliver(reloader)
    finally:
        relay.close()
    assert answer.startswith("reload ok (seen on the admin socket): haproxy worker pid ")
