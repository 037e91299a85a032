"""The file watcher against real files: what wakes it (changes of the files we read) and what does not."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from monitor.adapters.filewatch import FileWatcher, WatchPoint, watch_points


class Calls:
    """Counts callbacks and lets a test wait for the next one."""

    def __init__(self) -> None:
        self.count = 0
        self._cond = threading.Condition()

    def __call__(self) -> None:
        with self._cond:
            self.count += 1
            self._cond.notify_all()

    def wait_beyond(self, seen: int, *, timeout: float = 10.0) -> int:
        with self._cond:
            if not self._cond.wait_for(lambda: self.count > seen, timeout=timeout):
                raise AssertionError(f"no callback within {timeout}s (still {self.count})")
            return self.count


class Watched:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.template_calls = Calls()
        self.credential_calls = Calls()
        self.watcher = FileWatcher(
            on_template=self.template_calls, on_credentials=self.credential_calls, debounce=0.05
        )

    def watch(self, *, template: Path, credentials: list[Path]) -> FileWatcher:
        self.watcher.set_files(template=template, credentials=credentials)
        self.watcher.start()
        return self.watcher


@pytest.fixture
def watched(tmp_path: Path) -> Iterator[Watched]:
    w = Watched(tmp_path)
    yield w
    w.watcher.stop()


def change_and_wait(calls: Calls, change: Callable[[], object]) -> None:
    seen = calls.count
    change()
    calls.wait_beyond(seen)


def test_an_in_place_write_to_the_template_calls_the_template_callback(watched: Watched) -> None:
    template = watched.tmp / "haproxy.cfg.j2"
    template.write_text("one\n")
    watched.watch(template=template, credentials=[])
    change_and_wait(watched.template_calls, lambda: template.write_text("two\n"))
    assert watched.credential_calls.count == 0


def test_a_file_replaced_by_rename_is_seen_and_so_is_the_next_edit_of_the_new_file(watched: Watched) -> None:
    kubeconfig = watched.tmp / "kubeconfig"
    kubeconfig.write_text("a\n")
    watched.watch(template=watched.tmp / "t.j2", credentials=[kubeconfig])
    staged = watched.tmp / ".kubeconfig.new"

    def replace() -> None:
        staged.write_text("b\n")
        os.replace(staged, kubeconfig)

    change_and_wait(watched.credential_calls, replace)
    # The watch moved to the new inode: an in-place edit of the replacement is seen too.
    change_and_wait(watched.credential_calls, lambda: kubeconfig.write_text("c\n"))


def test_a_swapped_certificate_symlink_calls_the_credentials_callback(watched: Watched) -> None:
    pki = watched.tmp / "pki"
    pki.mkdir()
    (pki / "kubelet-client-1.pem").write_text("cert 1\n")
    current = pki / "kubelet-client-current.pem"
    current.symlink_to("kubelet-client-1.pem")
    watched.watch(template=watched.tmp / "t.j2", credentials=[current])

    def rotate(n: int) -> None:
        (pki / f"kubelet-client-{n}.pem").write_text(f"cert {n}\n")
        link = pki / f".current.{n}"
        link.symlink_to(f"kubelet-client-{n}.pem")
        os.replace(link, current)  # as the kubelet swaps it: the old certificate file is not touched

    change_and_wait(watched.credential_calls, lambda: rotate(2))
    change_and_wait(watched.credential_calls, lambda: rotate(3))
    # And the new target itself is watched.
    change_and_wait(
        watched.credential_calls, lambda: (pki / "kubelet-client-3.pem").write_text("rewritten\n")
    )


def test_a_configmap_style_data_directory_swap_is_seen(watched: Watched) -> None:
    mount = watched.tmp / "config"
    (mount / "..2026_01").mkdir(parents=True)
    (mount / "..2026_01" / "haproxy.cfg.tmpl").write_text("v1\n")
    (mount / "..data").symlink_to("..2026_01")
    template = mount / "haproxy.cfg.tmpl"
    template.symlink_to("..data/haproxy.cfg.tmpl")
    watched.watch(template=template, credentials=[])

    def swap() -> None:
        (mount / "..2026_02").mkdir()
        (mount / "..2026_02" / "haproxy.cfg.tmpl").write_text("v2\n")
        (mount / "..data_tmp").symlink_to("..2026_02")
        os.replace(mount / "..data_tmp", mount / "..data")

    change_and_wait(watched.template_calls, swap)


def test_a_deleted_file_is_seen_and_so_is_its_return_even_in_a_new_directory(watched: Watched) -> None:
    token_dir = watched.tmp / "secrets"
    token_dir.mkdir()
    token = token_dir / "token"
    token.write_text("t1\n")
    watched.watch(template=watched.tmp / "t.j2", credentials=[token])
    change_and_wait(watched.credential_calls, token.unlink)
    change_and_wait(watched.credential_calls, token_dir.rmdir)
    change_and_wait(watched.credential_calls, token_dir.mkdir)
    change_and_wait(watched.credential_calls, lambda: token.write_text("t2\n"))
    change_and_wait(watched.credential_calls, lambda: token.write_text("t3\n"))


def test_a_mode_change_is_seen(watched: Watched) -> None:
    key = watched.tmp / "client.key"
    key.write_text("key\n")
    watched.watch(template=watched.tmp / "t.j2", credentials=[key])
    change_and_wait(watched.credential_calls, lambda: key.chmod(0o600))


def test_other_files_read_written_and_replaced_beside_ours_never_wake_the_watcher(watched: Watched) -> None:
    template = watched.tmp / "haproxy.cfg.j2"
    template.write_text("ours\n")
    kubeconfig = watched.tmp / "kubeconfig"
    kubeconfig.write_text("ours\n")
    watched.watch(template=template, credentials=[kubeconfig])
    neighbour = watched.tmp / "neighbour.txt"
    for n in range(50):
        neighbour.write_text(f"{n}\n")
        neighbour.read_text()
        staged = watched.tmp / "neighbour.tmp"
        staged.write_text(f"{n}\n")
        os.replace(staged, neighbour)
    # Reading our own files (as the monitor does on every reload) is not a change either.
    template.read_text()
    kubeconfig.read_text()
    # inotify delivers in order: once our chmod's callback has run, anything queued before it was read too.
    change_and_wait(watched.credential_calls, lambda: kubeconfig.chmod(0o640))
    assert watched.watcher.events() == 1
    assert watched.template_calls.count == 0


def test_a_burst_of_writes_calls_back_once_it_is_quiet(tmp_path: Path) -> None:
    template = tmp_path / "haproxy.cfg.j2"
    template.write_text("0\n")
    calls = Calls()
    # A long quiet time, so that a busy machine cannot stretch the burst past it.
    watcher = FileWatcher(on_template=calls, on_credentials=Calls(), debounce=1.0)
    watcher.set_files(template=template, credentials=[])
    watcher.start()
    try:
        start = time.monotonic()
        for n in range(20):
            template.write_text(f"{n}\n")
        calls.wait_beyond(0)
        assert time.monotonic() - start >= 1.0
        assert calls.count == 1
    finally:
        watcher.stop()


def test_watch_points_name_each_symlink_on_the_path_and_the_file_it_ends_at(tmp_path: Path) -> None:
    tmp_path = tmp_path.resolve()
    real = tmp_path / "real"
    real.mkdir()
    (real / "cert.pem").write_text("x\n")
    (tmp_path / "dir-link").symlink_to("real")
    (real / "current.pem").symlink_to("../dir-link/cert.pem")
    assert watch_points(tmp_path / "dir-link" / "current.pem") == [
        WatchPoint(tmp_path / "dir-link", "link"),
        WatchPoint(real / "current.pem", "link"),
        WatchPoint(tmp_path / "dir-link", "link"),
        WatchPoint(real / "cert.pem", "file"),
    ]
    assert watch_points(tmp_path / "absent" / "kubeconfig") == [WatchPoint(tmp_path, "missing", "absent")]
