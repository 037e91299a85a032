"""Watches the template, the kubeconfig and its certificate files (watchdog), debounced, and calls back."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer


class _Debounced:
    """Runs ``fn`` once, ``delay`` seconds after the last trigger (editors write a file in several steps)."""

    def __init__(self, fn: Callable[[], None], delay: float) -> None:
        self._fn = fn
        self._delay = delay
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def trigger(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(self._delay, self._fn)
            self._timer.daemon = True
            self._timer.start()

    def cancel(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()


class _Handler(FileSystemEventHandler):
    def __init__(self, owner: FileWatcher) -> None:
        self._owner = owner

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            if raw:
                self._owner._touched(Path(os.fsdecode(raw)))


class FileWatcher:
    """Directory watches (a file replaced by rename or a swapped symlink is seen) filtered to files of interest."""

    def __init__(
        self, *, on_template: Callable[[], None], on_credentials: Callable[[], None], debounce: float = 0.2
    ) -> None:
        self._template_cb = _Debounced(on_template, debounce)
        self._cred_cb = _Debounced(on_credentials, debounce)
        # The observer's threads wake every `timeout` seconds only to check for stop(); inotify itself blocks.
        self._observer = Observer(timeout=10)
        self._observer.daemon = True
        self._lock = threading.Lock()
        self._template: set[Path] = set()
        self._credentials: set[Path] = set()
        self._dirs: set[Path] = set()

    @staticmethod
    def _expand(paths: Iterable[Path]) -> set[Path]:
        # Watch the path as given and where a symlink points (kubelet swaps kubelet-client-current.pem).
        out: set[Path] = set()
        for p in paths:
            absolute = Path(os.path.abspath(p))
            out.add(absolute)
            with contextlib.suppress(OSError):
                out.add(absolute.resolve())
        return out

    def set_files(self, *, template: Path, credentials: Iterable[Path]) -> None:
        with self._lock:
            self._template = self._expand([template])
            self._credentials = self._expand(credentials)
            wanted = {p.parent for p in self._template | self._credentials}
            for directory in sorted(wanted - self._dirs):
                if directory.is_dir():
                    self._observer.schedule(_Handler(self), str(directory), recursive=False)
                    self._dirs.add(directory)

    def _touched(self, path: Path) -> None:
        absolute = Path(os.path.abspath(path))
        with self._lock:
            template = absolute in self._template
            credentials = absolute in self._credentials
        if template:
            self._template_cb.trigger()
        if credentials:
            self._cred_cb.trigger()

    def start(self) -> None:
        self._observer.start()

    def stop(self) -> None:
        self._template_cb.cancel()
        self._cred_cb.cancel()
        self._observer.stop()
