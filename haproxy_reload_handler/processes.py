"""What the kernel says about processes: children from /proc, wait statuses in words, signals, the pid file."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
from dataclasses import dataclass
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    """Workers orphaned by a SIGKILLed master are re-parented to us (not to init), so we reap and stop them."""
    with contextlib.suppress(ctypes.ArgumentError, OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (HAProxy's workers of a master)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        return [int(x) for x in text.split()]
    except FileNotFoundError:
        return []
    except OSError:
        pass
    # Kernels without CONFIG_PROC_CHILDREN: scan /proc for the parent pid.
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            data = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = data.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[1] == str(pid):
            found.append(int(entry))
    return found


def descendants(pid: int) -> list[int]:
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in child_pids(todo.pop()):
            out.append(child)
            todo.append(child)
    return out


def has_children() -> bool:
    """Whether any child (started or re-parented to us) is still running or waiting to be reaped."""
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return True


def send(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def exit_words(code: int) -> str:
    """``os.waitstatus_to_exitcode`` in words: 'exited with status 1', 'was killed by SIGKILL'."""
    if code >= 0:
        return f"exited with status {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    return f"was killed by {name}"


@dataclass(frozen=True)
class FileIdentity:
    """Which file a path named at one moment, and when it was last written; None fields: no file."""

    dev: int | None = None
    ino: int | None = None
    mtime_ns: int | None = None

    @classmethod
    def of(cls, path: Path) -> FileIdentity:
        try:
            st = path.stat()
        except OSError:
            return cls()
        return cls(st.st_dev, st.st_ino, st.st_mtime_ns)


def wrote_pid_file(path: Path, pid: int, *, before: FileIdentity) -> bool:
    """Whether HAProxy master ``pid`` wrote its pid file since ``before`` was taken.

    HAProxy (-W) unlinks and recreates the -p file only after its config was parsed and its listeners
    bound, and writes the master's pid into it just before it forks the worker. The file outlives the
    process, so this answers "did it get as far as starting a worker?" even after it died, whenever we
    look. Comparing with ``before`` rules out a stale file from an earlier process that had the same pid.
    """
    if FileIdentity.of(path) == before:
        return False
    try:
        return path.read_text().strip() == str(pid)
    except (OSError, UnicodeDecodeError):
        return False
