"""Watches the template, the kubeconfig and its certificate files (inotify on their inodes), debounced, and calls back.

Only a change of what reading a file returns wakes the watcher: a write, an attribute or link-count change
(a rename over it, a deletion) of the file itself or of a symlink met on its path. Directories are watched
only while a file is missing, and then only for that name appearing. So other processes opening, reading
and writing their own files beside ours cost nothing: a directory watch would deliver each of their
events to us (watchdog's did, with IN_OPEN and IN_CLOSE_NOWRITE among them).
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import stat
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from monitor.logs import Log

# <sys/inotify.h>
IN_MODIFY = 0x002
IN_ATTRIB = 0x004
IN_CLOSE_WRITE = 0x008
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_CLOEXEC = 0o2000000
IN_NONBLOCK = 0o4000

# A file's or symlink's own inode: its content (IN_MODIFY covers truncate(2), which closes nothing), its
# attributes, and IN_ATTRIB for its link count, which is how a rename over it or an unlink shows.
_INODE = IN_MODIFY | IN_CLOSE_WRITE | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF
# The directory where a name on the path is missing: only that name appearing matters.
_MISSING = IN_CREATE | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR
_HEADER = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then len bytes of name)
_MAX_SYMLINKS = 40  # as the kernel's path walk


@dataclass(frozen=True)
class WatchPoint:
    """One inode to watch for one file we read: a symlink on its path, the file itself, or where it is missing."""

    path: Path
    kind: str  # "link", "file" or "missing"
    name: str = ""  # for "missing": the name awaited in that directory


def watch_points(path: Path) -> list[WatchPoint]:
    """Resolve *path* component by component, as the kernel does, noting every inode that decides what it reads.

    Each symlink met (a kubelet-client-current.pem, a ConfigMap's ``..data``) is a point of its own: swapping
    it changes the file read without touching the old file. When resolution stops at a missing name, the
    directory it is missing from is the last point.
    """
    pending = list(Path(os.path.abspath(path)).parts[1:])
    current = Path("/")
    points: list[WatchPoint] = []
    hops = 0
    while pending:
        name = pending.pop(0)
        if name in ("", "."):
            continue
        if name == "..":
            current = current.parent  # `current` holds no symlinks: its parent is the real one
            continue
        candidate = current / name
        try:
            mode = os.lstat(candidate).st_mode
        except OSError:
            return [*points, WatchPoint(current, "missing", name)]
        if stat.S_ISLNK(mode):
            points.append(WatchPoint(candidate, "link"))
            hops += 1
            try:
                target = os.readlink(candidate)
            except OSError:
                return points
            if hops > _MAX_SYMLINKS:
                return points
            if target.startswith("/"):
                current = Path("/")
            pending[:0] = list(Path(target).parts[1:] if target.startswith("/") else Path(target).parts)
            continue
        current = candidate
    return [*points, WatchPoint(current, "file")]


class _Inotify:
    """One inotify instance (libc through ctypes: the standard library has no binding)."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.inotify_add_watch.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)
        self.fd = self._libc.inotify_init1(IN_CLOEXEC | IN_NONBLOCK)
        if self.fd < 0:
            code = ctypes.get_errno()
            # EMFILE here is fs.inotify.max_user_instances (128 by default), not the open-file limit.
            raise OSError(code, f"inotify_init1: {os.strerror(code)} (fs.inotify.max_user_instances?)")

    def add(self, path: Path, mask: int) -> int:
        wd = int(self._libc.inotify_add_watch(self.fd, os.fsencode(path), mask))
        if wd < 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), str(path))
        return wd

    def remove(self, wd: int) -> None:
        self._libc.inotify_rm_watch(self.fd, wd)  # fails only for a watch the kernel already dropped

    def read(self) -> Iterator[tuple[int, int, str]]:
        """The queued events as (wd, mask, name); none when the queue is empty."""
        try:
            data = os.read(self.fd, 64 * 1024)
        except BlockingIOError:
            return
        offset = 0
        while offset + _HEADER.size <= len(data):
            wd, mask, _cookie, size = _HEADER.unpack_from(data, offset)
            offset += _HEADER.size
            name = data[offset : offset + size].rstrip(b"\0")
            offset += size
            yield wd, mask, os.fsdecode(name)

    def close(self) -> None:
        os.close(self.fd)


class FileWatcher:
    """Calls on_template / on_credentials (from its own thread) once their files have been quiet for *debounce*."""

    def __init__(
        self, *, on_template: Callable[[], None], on_credentials: Callable[[], None], debounce: float = 0.2
    ) -> None:
        self._callbacks = {"template": on_template, "credentials": on_credentials}
        self._debounce = debounce
        self._log = Log("files")
        self._lock = threading.Lock()
        self._inotify = _Inotify()
        self._wake_r, self._wake_w = os.pipe()
        self._files: dict[str, list[Path]] = {"template": [], "credentials": []}
        # Per watch descriptor: the groups whose files it serves, and for a "missing" watch the awaited names.
        self._groups: dict[int, set[str]] = {}
        self._awaited: dict[int, set[str] | None] = {}
        self._due: dict[str, float] = {}
        self._events = 0
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._failed: set[str] = set()

    # -- thread-safe ------------------------------------------------------------------------------------------

    def set_files(self, *, template: Path, credentials: Iterable[Path]) -> None:
        """Watch these files (replacing the previous set)."""
        with self._lock:
            self._files = {"template": [Path(template)], "credentials": [Path(p) for p in credentials]}
            self._arm()

    def events(self) -> int:
        """inotify events delivered so far: what woke the watcher (for benchmarks and tests)."""
        with self._lock:
            return self._events

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="filewatch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
        os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout=2)
        self._inotify.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    # -- the watching thread ----------------------------------------------------------------------------------

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._inotify.fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while True:
            with self._lock:
                if self._stopping:
                    return
                due = min(self._due.values(), default=None)
            # No timeout unless a callback is due: an idle watcher does not wake.
            timeout = None if due is None else max(0, int((due - time.monotonic()) * 1000) + 1)
            ready = {fd for fd, _ in poller.poll(timeout)}
            if self._inotify.fd in ready:
                self._drain()
            self._fire_due()

    def _drain(self) -> None:
        touched: set[str] = set()
        with self._lock:
            rearm = False
            for wd, mask, name in self._inotify.read():
                self._events += 1
                if mask & IN_Q_OVERFLOW:
                    touched.update(self._callbacks)
                    rearm = True
                    continue
                groups = self._groups.get(wd)
                if groups is None:
                    continue  # a watch we removed, its IN_IGNORED
                awaited = self._awaited.get(wd)
                if awaited is not None and name and name not in awaited:
                    continue  # another file appearing in a directory where one of ours is missing
                touched.update(groups)
                rearm = True
            if rearm:
                # The inode may be gone (replaced, deleted) or a missing file may exist now: watch what is there.
                self._arm()
            now = time.monotonic()
            for group in touched:
                self._due[group] = now + self._debounce

    def _fire_due(self) -> None:
        now = time.monotonic()
        with self._lock:
            fire = [group for group, at in self._due.items() if at <= now]
            for group in fire:
                del self._due[group]
        for group in fire:
            try:
                self._callbacks[group]()
            except Exception as exc:  # a failing callback must not end the watching
                self._log.error("callback failed", files=group, error=f"{type(exc).__name__}: {exc}")

    # -- watches (under the lock) -----------------------------------------------------------------------------

    def _arm(self) -> None:
        """Watch the inodes the files resolve to now; drop watches no file needs any more."""
        if self._stopping:
            return
        for _ in range(3):
            wanted = self._wanted()
            groups: dict[int, set[str]] = {}
            awaited: dict[int, set[str] | None] = {}
            for point, group in wanted:
                wd = self._add(point)
                if wd is None:
                    continue
                groups.setdefault(wd, set()).add(group)
                if point.kind == "missing":
                    names = awaited.get(wd) or set()
                    awaited[wd] = names | {point.name}
                else:
                    awaited[wd] = None
            for wd in set(self._groups) - set(groups):
                self._inotify.remove(wd)
            self._groups, self._awaited = groups, awaited
            # A name may have appeared (or a link been swapped) between the walk and the watch: walk again.
            if self._wanted() == wanted:
                return

    def _wanted(self) -> list[tuple[WatchPoint, str]]:
        return [
            (point, group)
            for group, files in self._files.items()
            for path in files
            for point in watch_points(path)
        ]

    def _add(self, point: WatchPoint) -> int | None:
        mask = {"link": _INODE | IN_DONT_FOLLOW, "file": _INODE, "missing": _MISSING}[point.kind]
        try:
            wd = self._inotify.add(point.path, mask)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTDIR) and str(point.path) not in self._failed:
                # ENOSPC is fs.inotify.max_user_watches: say so once, changes there need a restart.
                self._failed.add(str(point.path))
                self._log.warning("cannot watch file", path=str(point.path), error=exc.strerror or str(exc))
            return None
        self._failed.discard(str(point.path))
        return wd
