"""Requests per second a KubeWatcher sends to a failing API server, per fault; prints figures, asserts nothing.

Run: .venv/bin/python bench/bench_kube_faults.py [--seconds 10]
The watcher runs with its production defaults (backoff, timeouts, no fallback); the first list succeeds,
then the fault starts, the open watch is cut, and the simulated server's request counter is read over the
window (for a closed port, the watcher's own count of requests sent).
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from monitor.adapters.kube import KubeWatcher
from monitor.events import Connectivity, Objects
from monitor.testbed.apiserver import KubeSim

MASTER = {"node-role.kubernetes.io/master": ""}

FAULTS: dict[str, Callable[[KubeSim], None]] = {
    "watch answered 410 every time": KubeSim.expire_watches,
    "watch ends at once (empty 200)": KubeSim.end_watches,
    "429 with Retry-After: 2": lambda sim: sim.throttle(retry_after=2),
    "500 on every request": KubeSim.status500,
    "connection reset (refuse)": KubeSim.refuse,
}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure(directory: Path, name: str, start_fault: Callable[[KubeSim], None] | None, seconds: float) -> str:
    with KubeSim(directory=directory) as sim:
        sim.add_node("master-0", labels=MASTER, addresses=[("InternalIP", "192.0.2.10")])
        kubeconfig = sim.write_kubeconfig(directory / "kc")
        if start_fault is None:  # nothing listens: every connect is refused by the kernel
            text = kubeconfig.read_text().replace(sim.url, f"https://127.0.0.1:{closed_port()}")
            kubeconfig.write_text(text)
        first = threading.Event()

        def emit(item: Objects | Connectivity) -> None:
            if isinstance(item, Objects) or (isinstance(item, Connectivity) and not item.reachable):
                first.set()

        watcher = KubeWatcher(
            kubeconfig=kubeconfig,
            source="nodes",
            node_selector="node-role.kubernetes.io/master=",
            fallback_server="",
            relist_interval=300.0,
            emit=emit,
        )
        stop = threading.Event()
        thread = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
        thread.start()
        first.wait(10)
        if start_fault is not None:
            start_fault(sim)
            sim.cut_streams()  # the open watch would otherwise outlive the window untouched by the fault
        count = (lambda: sim.request_count()) if start_fault is not None else watcher.request_count
        before = count()
        time.sleep(seconds)
        sent = count() - before
        stop.set()
        thread.join(5)
    return f"{name:34s} {sent:5d} requests in {seconds:g} s = {sent / seconds:6.2f}/s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cases: list[tuple[str, Callable[[KubeSim], None] | None]] = [*FAULTS.items()]
        cases.append(("connection refused (closed port)", None))
        for i, (name, fault) in enumerate(cases):
            print(measure(Path(tmp) / str(i), name, fault, args.seconds), flush=True)


if __name__ == "__main__":
    main()
