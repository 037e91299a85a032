"""Membership changes under load on one host: runtime API changes against reloads.

A real HAProxy 2.6 (HaproxyLab, the shipped Jinja2 template with 500 ms checks) in front of fake API servers on
loopback; a load loop of short TLS requests and a pool of idle long-lived TLS streams run through it while the
apply pipeline makes ``--changes`` membership changes (address change, addition, removal; 2 to 5 servers), once
with runtime changes and once with reloads. The reload handler force-stops old HAProxy processes after
``--force-stop-after`` (the shipped default is 120 s: the cut comes later, not never). Prints figures, asserts
nothing. Run: .venv/bin/python bench/bench_runtime.py [--changes 100] [--streams 20] [--period 1.5]
"""

from __future__ import annotations

import argparse
import contextlib
import random
import socket
import ssl
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from monitor.adapters.config_writer import ConfigWriter, find_haproxy
from monitor.adapters.reloader import Reloader
from monitor.adapters.runtime_api import RuntimeApi
from monitor.model import Backend
from monitor.pipeline import Pipeline
from monitor.render import Renderer
from monitor.testbed.haproxy import FakeApiServer, HaproxyLab, free_port

REPO = Path(__file__).resolve().parent.parent
ADDRESSES = [f"127.0.0.{i}" for i in range(2, 10)]
TLS = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
TLS.check_hostname, TLS.verify_mode = False, ssl.CERT_NONE


@dataclass
class Figures:
    mode: str
    changes: int = 0
    reloads: int = 0
    runtime_applies: int = 0
    fallbacks: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    failed: int = 0
    cut: list[int] = field(default_factory=list)  # long-lived streams found cut after each change
    expected_cut: list[int] = field(default_factory=list)  # streams on the server a change removed
    serving: list[float] = field(default_factory=list)  # change → HAProxy serving it (check passed)


class Load:
    """Short TLS requests through HAProxy, one after the other, until stopped; counts the failures."""

    def __init__(self, port: int) -> None:
        self.port, self.ok, self.failed = port, 0, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                with TLS.wrap_socket(socket.create_connection(("127.0.0.1", self.port), timeout=5)) as conn:
                    conn.sendall(b"GET /readyz HTTP/1.0\r\n\r\n")
                    good = conn.recv(64).startswith(b"HTTP/1.0 200")
            except OSError:
                good = False
            if good:
                self.ok += 1
            else:
                self.failed += 1
            time.sleep(0.005)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)


def is_cut(conn: ssl.SSLSocket) -> bool:
    conn.setblocking(False)
    try:
        return conn.recv(1) == b""
    except (ssl.SSLWantReadError, BlockingIOError):
        return False
    except OSError:
        return True
    finally:
        conn.setblocking(True)


def wait(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if predicate():
                return
        time.sleep(0.005)
    raise TimeoutError("condition not reached")


def run(mode: str, args: argparse.Namespace, tmp: Path) -> Figures:
    figures = Figures(mode=mode)
    rng = random.Random(args.seed)
    template = tmp / "haproxy.cfg.j2"
    template.write_text(
        (REPO / "templates" / "haproxy.cfg.j2").read_text().replace("inter 5s", "inter 500ms")
    )
    port = free_port()
    with contextlib.ExitStack() as stack:
        lab = stack.enter_context(
            HaproxyLab(
                workdir=tmp / "lab", template=template, force_stop_after=args.force_stop_after, kill_grace=0.5
            )
        )
        for address in ADDRESSES:
            stack.enter_context(FakeApiServer(cert_dir=tmp / "pki", address=address, port=port))
        runtime = RuntimeApi(drain_timeout=args.drain_timeout) if mode == "runtime" else None
        reloader = Reloader(socket_path=lab.master_socket, clock=time.monotonic)
        pipeline = Pipeline(
            template=Renderer(lab.template_path),
            writer=ConfigWriter(cfg=lab.cfg_path, haproxy_bin=find_haproxy(None)),
            reloader=reloader,
            clock=time.monotonic,
            runtime=runtime,
        )
        members = {f"m{i}": ADDRESSES[i] for i in range(3)}
        names = iter(range(3, 10**6))

        def backends() -> list[Backend]:
            return [Backend(h, a, port) for h, a in sorted(members.items())]

        lab.write_config(lab.render(backends()))
        lab.start_handler()
        wait(
            lambda: all(s.check_status == "L7OK" for s in lab.servers().values()) and len(lab.servers()) == 3
        )
        load = Load(lab.lb_port)
        streams = [
            TLS.wrap_socket(socket.create_connection(("127.0.0.1", lab.lb_port))) for _ in range(args.streams)
        ]
        try:
            for _ in range(args.changes):
                free = [a for a in ADDRESSES if a not in members.values()]
                kind = (
                    "add"
                    if len(members) <= 2
                    else "remove"
                    if len(members) >= 5
                    else rng.choice(["move", "add", "remove"])
                )
                sessions = 0
                if kind == "move":
                    host = rng.choice(sorted(members))
                    members[host] = rng.choice(free)
                elif kind == "add":
                    host = f"m{next(names)}"
                    members[host] = rng.choice(free)
                else:
                    host = rng.choice(sorted(members))
                    sessions = lab.servers()[host].current_sessions
                    del members[host]
                start = time.monotonic()
                result = pipeline.apply(lab.lbconfig(backends()))
                assert result.stage_failed is None, result.error
                if result.runtime_applied:
                    figures.runtime_applies += 1
                elif result.runtime is not None:
                    reason = result.runtime.reason or "?"
                    figures.fallbacks[reason] = figures.fallbacks.get(reason, 0) + 1
                if result.reload is not None and result.reload.sent:
                    figures.reloads += 1
                want = f"{members[host]}:{port}" if host in members else None

                def serving(host: str = host, want: str | None = want) -> bool:
                    servers = lab.servers()
                    if want is None:
                        return host not in servers
                    s = servers.get(host)
                    return (
                        s is not None and s.address == want and s.status == "UP" and s.check_status == "L7OK"
                    )

                wait(serving)
                figures.serving.append(time.monotonic() - start)
                figures.expected_cut.append(sessions)
                # The same pace in both modes: long enough for a reload's old HAProxy to be force-stopped.
                time.sleep(max(0.0, start + args.period - time.monotonic()))
                cut = [i for i, conn in enumerate(streams) if is_cut(conn)]
                figures.cut.append(len(cut))
                for i in cut:
                    streams[i].close()
                    streams[i] = TLS.wrap_socket(socket.create_connection(("127.0.0.1", lab.lb_port)))
                figures.changes += 1
        finally:
            load.close()
            for conn in streams:
                conn.close()
        figures.requests, figures.failed = load.ok + load.failed, load.failed
    return figures


def report(f: Figures) -> None:
    serving = sorted(f.serving)
    p50 = statistics.median(serving) if serving else float("nan")
    per_change = sum(f.cut) / max(1, f.changes)
    print(
        f"{f.mode:8} changes {f.changes}, reloads {f.reloads}, runtime applies {f.runtime_applies}, "
        f"fallbacks {f.fallbacks or 0}; requests {f.requests}, failed {f.failed}; "
        f"long-lived streams cut {sum(f.cut)} ({per_change:.2f}/change; on removed servers {sum(f.expected_cut)}); "
        f"change→serving p50 {p50 * 1000:.0f} ms, max {max(serving, default=0) * 1000:.0f} ms"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--changes", type=int, default=100)
    ap.add_argument("--streams", type=int, default=20, help="idle long-lived TLS streams kept open")
    ap.add_argument("--period", type=float, default=1.5, help="seconds from one change to the next")
    ap.add_argument("--drain-timeout", type=float, default=0.5)
    ap.add_argument("--force-stop-after", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument("--modes", default="runtime,reload")
    args = ap.parse_args()
    for mode in args.modes.split(","):
        with tempfile.TemporaryDirectory(prefix=f"bench-runtime-{mode}-") as tmp:
            report(run(mode, args, Path(tmp)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
