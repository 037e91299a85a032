"""The client of the control-plane world: a paced stream of HTTPS requests and a few watch streams to the VIP.

Runs as its own process in the client namespace (own GIL, so its latencies are not the test's) and writes one
line per event to ``--out`` (the file is the record; the world reads it back)::

    R <start> <latency> <ok 0|1> <reason>      one request (monotonic seconds: CLOCK_MONOTONIC is system-wide)
    S <stream> <opened> <ended> <reason>       one watch stream from its response headers to its end

It stops by itself after ``--duration`` seconds, or at SIGTERM.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import signal
import socket
import ssl
import sys
import threading
import time
from pathlib import Path
from typing import TextIO


class Recorder:
    """One line per event, written whole under a lock and flushed so a reader never sees half a line."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._lock = threading.Lock()

    def line(self, text: str) -> None:
        with self._lock:
            self._out.write(text + "\n")
            self._out.flush()


def _connect(ctx: ssl.SSLContext, vip: str, port: int, timeout: float) -> ssl.SSLSocket:
    raw = socket.create_connection((vip, port), timeout=timeout)
    try:
        return ctx.wrap_socket(raw, server_hostname=vip)
    except BaseException:
        raw.close()
        raise


def _status(conn: ssl.SSLSocket) -> int:
    head = b""
    while b"\r\n" not in head:
        chunk = conn.recv(4096)
        if not chunk:
            raise ConnectionError("closed before the status line")
        head += chunk
    parts = head.split(b"\r\n", 1)[0].split()
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def one_request(ctx: ssl.SSLContext, vip: str, port: int, timeout: float, rec: Recorder) -> None:
    start = time.monotonic()
    try:
        with _connect(ctx, vip, port, timeout) as conn:
            conn.sendall(f"GET /readyz HTTP/1.1\r\nHost: {vip}\r\nConnection: close\r\n\r\n".encode())
            code = _status(conn)
        ok, reason = code == 200, f"http-{code}"
    except (OSError, ValueError) as exc:
        ok, reason = False, type(exc).__name__
    rec.line(f"R {start:.6f} {time.monotonic() - start:.6f} {int(ok)} {reason}")


def one_stream(
    ctx: ssl.SSLContext, vip: str, port: int, index: int, stop: threading.Event, rec: Recorder
) -> None:
    """Hold a watch open; when it ends, record how and open another (until stop)."""
    while not stop.is_set():
        opened = time.monotonic()
        try:
            with _connect(ctx, vip, port, 2.0) as conn:
                path = "/api/v1/nodes?watch=1&allowWatchBookmarks=true&timeoutSeconds=3600"
                conn.sendall(f"GET {path} HTTP/1.1\r\nHost: {vip}\r\n\r\n".encode())
                code = _status(conn)
                if code != 200:
                    raise ConnectionError(f"http-{code}")
                opened = time.monotonic()
                conn.settimeout(0.5)
                reason = "stopped"
                while not stop.is_set():
                    try:
                        if not conn.recv(65536):
                            reason = "eof"
                            break
                    except TimeoutError:
                        continue
        except (OSError, ValueError) as exc:
            reason = type(exc).__name__
        rec.line(f"S {index} {opened:.6f} {time.monotonic():.6f} {reason}")
        if reason != "stopped":
            stop.wait(0.2)  # a refused reconnect must not spin


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="worldclient")
    p.add_argument("--vip", required=True)
    p.add_argument("--port", type=int, default=6443)
    p.add_argument("--ca", type=Path, required=True)
    p.add_argument("--cert", type=Path, required=True)
    p.add_argument("--key", type=Path, required=True)
    p.add_argument("--rate", type=float, default=20.0, help="requests started per second")
    p.add_argument("--streams", type=int, default=0, help="long-lived watch connections")
    p.add_argument("--timeout", type=float, default=2.0, help="bound of one request")
    p.add_argument("--duration", type=float, default=300.0, help="stop after this many seconds")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(args.ca))
    ctx.load_cert_chain(str(args.cert), str(args.key))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with open(args.out, "a", buffering=1) as out:
        rec = Recorder(out)
        rec.line(f"B {time.monotonic():.6f}")
        streams = [
            threading.Thread(target=one_stream, args=(ctx, args.vip, args.port, i, stop, rec), daemon=True)
            for i in range(args.streams)
        ]
        for t in streams:
            t.start()
        # A fixed schedule, not back-to-back requests: an outage costs rate × its length, however slow a
        # failing request is.
        end = time.monotonic() + args.duration
        with concurrent.futures.ThreadPoolExecutor(max_workers=32) as pool:
            tick = time.monotonic()
            while not stop.is_set() and tick < end:
                pool.submit(one_request, ctx, args.vip, args.port, args.timeout, rec)
                tick += 1.0 / args.rate
                stop.wait(max(0.0, tick - time.monotonic()))
            stop.set()
        for t in streams:
            t.join(timeout=5)
        rec.line(f"E {time.monotonic():.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
