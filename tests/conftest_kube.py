"""Helpers for tests that drive the Kubernetes adapter against the simulated API server."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from monitor.adapters.kube import KubeWatcher
from monitor.adapters.kube.client import Limits
from monitor.events import Connectivity, Objects
from monitor.testbed.apiserver import KubeSim

MASTER = "node-role.kubernetes.io/master"
MASTER_SELECTOR = f"{MASTER}="


class Recorder:
    """Collects what a watcher emits and waits, with a deadline, for a condition on it."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.items: list[Objects | Connectivity] = []

    def __call__(self, item: Objects | Connectivity) -> None:
        with self._cond:
            self.items.append(item)
            self._cond.notify_all()

    def snapshots(self) -> list[Objects]:
        with self._cond:
            return [i for i in self.items if isinstance(i, Objects)]

    def statuses(self) -> list[Connectivity]:
        with self._cond:
            return [i for i in self.items if isinstance(i, Connectivity)]

    def wait_for(self, predicate: Callable[[Recorder], Any], *, timeout: float = 5.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                result = predicate(self)
                if result:
                    return result
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout}s waiting for {what}; got {self.items!r}")
                self._cond.wait(left)

    def wait_names(self, names: set[str], *, timeout: float = 5.0, server: str | None = None) -> Objects:
        def match(rec: Recorder) -> Objects | None:
            snaps = rec.snapshots()
            if (
                snaps
                and snapshot_names(snaps[-1]) == names
                and (server is None or snaps[-1].server == server)
            ):
                return snaps[-1]
            return None

        result: Objects = self.wait_for(match, timeout=timeout, what=f"a snapshot of {sorted(names)}")
        return result

    def wait_status(self, predicate: Callable[[Connectivity], bool], *, timeout: float = 5.0) -> Connectivity:
        def match(rec: Recorder) -> Connectivity | None:
            statuses = rec.statuses()
            return statuses[-1] if statuses and predicate(statuses[-1]) else None

        result: Connectivity = self.wait_for(match, timeout=timeout, what="an Connectivity")
        return result


def snapshot_names(snap: Objects) -> set[str]:
    return {str(o["metadata"]["name"]) for o in snap.items}


def add_master(sim: KubeSim, name: str, address: str = "192.0.2.10") -> int:
    return sim.add_node(name, labels={MASTER: ""}, addresses=[("InternalIP", address)])


@contextmanager
def running_watcher(
    *,
    kubeconfig: Path,
    recorder: Recorder,
    fallback_server: str = "",
    source: str = "nodes",
    relist_interval: float = 60.0,
    request_timeout: float = 2.0,
    watch_timeout_range: tuple[float, float] = (20.0, 30.0),
    backoff: tuple[float, float] = (0.1, 1.0),
    limits: Limits | None = None,
    secrets_dir: Path | None = None,
) -> Iterator[KubeWatcher]:
    """Run a KubeWatcher in a thread for the block; stops it and checks that run() returned quickly.

    Key files go to *secrets_dir*, by default a directory next to the kubeconfig (not the shared /tmp).
    """
    watcher = KubeWatcher(
        kubeconfig=kubeconfig,
        source=source,  # type: ignore[arg-type]
        node_selector=MASTER_SELECTOR,
        fallback_server=fallback_server,
        relist_interval=relist_interval,
        emit=recorder,
        request_timeout=request_timeout,
        watch_timeout_range=watch_timeout_range,
        backoff=backoff,
        limits=limits,
        secrets_dir=secrets_dir or kubeconfig.parent / "secrets",
    )
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield watcher
    finally:
        stop.set()
        watcher.close()
        thread.join(2.0)
        assert not thread.is_alive(), "KubeWatcher.run() did not return after stop"
