"""read_bounded: a FIFO, a device, a directory, a socket or a huge file is refused at once, naming the path."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from monitor.boundedread import RefusedFile, read_bounded

MiB = 1024 * 1024


def _fifo(tmp: Path) -> Path:
    path = tmp / "fifo"
    os.mkfifo(path)  # no writer: an ordinary open() would wait for one forever
    return path


def _directory(tmp: Path) -> Path:
    path = tmp / "a-directory"
    path.mkdir()
    return path


def _sparse(tmp: Path) -> Path:
    path = tmp / "sparse"
    with open(path, "wb") as fh:
        fh.truncate(100 * MiB)  # 100 MB of zeros that take no disk: reading them would still cost 100 MB
    return path


HOSTILE = {
    "a FIFO with no writer": (_fifo, "is a FIFO, not a regular file"),
    "/dev/zero": (lambda _tmp: Path("/dev/zero"), "is a character device, not a regular file"),
    "a directory": (_directory, "is a directory, not a regular file"),
    "a 100 MB sparse file": (_sparse, "is 100 MiB, larger than the 1 MiB accepted"),
}


@pytest.mark.timeout(10)
@pytest.mark.parametrize("case", list(HOSTILE), ids=list(HOSTILE))
def test_a_path_that_is_not_a_small_regular_file_is_refused_at_once_naming_it(
    case: str, tmp_path: Path
) -> None:
    make, reason = HOSTILE[case]
    path = make(tmp_path)
    start = time.monotonic()
    with pytest.raises(RefusedFile) as info:
        read_bounded(path, limit=1 * MiB)
    took = time.monotonic() - start
    assert str(info.value) == f"{path}: {reason}"
    assert info.value.strerror == reason, "callers print the path themselves, then the reason"
    assert took < 0.5, f"refused in {took * 1000:.0f} ms"


def test_a_unix_socket_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))
        with pytest.raises(RefusedFile, match=r"is a socket, not a regular file$"):
            read_bounded(path, limit=MiB)


def test_a_regular_file_and_a_symlink_to_one_are_read_whole_up_to_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)
    link = tmp_path / "link"
    link.symlink_to(path)
    assert read_bounded(path, limit=100) == b"x" * 100
    assert read_bounded(link, limit=100) == b"x" * 100
    with pytest.raises(RefusedFile, match="is 100 bytes, larger than the 99 bytes accepted"):
        read_bounded(link, limit=99)


def test_a_file_that_reports_size_zero_is_still_cut_at_the_limit() -> None:
    # /proc files report st_size 0 whatever they hold: the cap must hold on what is read, not on the size.
    assert os.stat("/proc/self/status").st_size == 0
    assert b"Name:" in read_bounded("/proc/self/status", limit=MiB)
    with pytest.raises(RefusedFile, match="holds more than the 10 bytes accepted"):
        read_bounded("/proc/self/status", limit=10)


def test_a_missing_file_raises_the_usual_file_not_found_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_bounded(tmp_path / "nope", limit=MiB)
