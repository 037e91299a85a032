"""Reading a file named by the user without blocking and without unbounded memory: regular files, capped."""

from __future__ import annotations

import errno
import os
import stat

_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFDIR: "a directory",
    stat.S_IFSOCK: "a socket",
}


class RefusedFile(OSError):
    """:func:`read_bounded` would not read this path: not a regular file, or larger than the cap.

    An OSError, so callers that report ``exc.strerror`` after the path need no new branch: ``strerror`` is
    the reason alone, ``str(exc)`` is ``"PATH: reason"``.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str, code: int) -> None:
        super().__init__(code, reason, os.fspath(path))

    def __str__(self) -> str:
        return f"{self.filename}: {self.strerror}"


def _size(n: int) -> str:
    return f"{n / 1024 / 1024:g} MiB" if n >= 1024 * 1024 else f"{n} bytes"


def _refuse_kind(path: str | os.PathLike[str], mode: int) -> None:
    if not stat.S_ISREG(mode):
        kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
        raise RefusedFile(path, f"is {kind}, not a regular file", errno.EINVAL)


def read_bounded(path: str | os.PathLike[str], *, limit: int) -> bytes:
    """The whole content of the regular file ``path`` (symlinks followed), if it holds at most ``limit`` bytes.

    Never blocks and never reads more than ``limit + 1`` bytes: a FIFO, a device, a directory or a socket
    is refused before anything is read (the open uses O_NONBLOCK, so a FIFO without a writer does not hang
    it), and so is a file whose size, or whose content as read (``/proc`` files report size 0), exceeds
    ``limit``. Raises :class:`RefusedFile` for those, and the OS's own OSError (FileNotFoundError,
    PermissionError, ...) for a path that cannot be opened.
    """
    # lstat-free: a symlink to a regular file is fine. stat first, so a device is never even opened (some
    # have side effects on open); fstat after, because the path may have been swapped in between.
    _refuse_kind(path, os.stat(path).st_mode)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        _refuse_kind(path, st.st_mode)
        if st.st_size > limit:
            raise RefusedFile(
                path, f"is {_size(st.st_size)}, larger than the {_size(limit)} accepted", errno.EFBIG
            )
        chunks: list[bytes] = []
        got = 0
        while got <= limit:
            chunk = os.read(fd, min(limit + 1 - got, 1024 * 1024))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        if got > limit:
            raise RefusedFile(path, f"holds more than the {_size(limit)} accepted", errno.EFBIG)
        return b"".join(chunks)
    finally:
        os.close(fd)
