"""Test helper: a unix stream socket server that misbehaves on demand (silent, or never accepting)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def misbehaving_unix_server(path: Path, mode: str) -> Iterator[Path]:
    """Serve ``path`` until the block ends. ``mode``:

    - ``silent``: accepts, reads, never answers, never closes;
    - ``no-accept``: listens with a full backlog and never accepts, so a connect itself waits.
    """
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    stop = threading.Event()
    held: list[socket.socket] = []
    threads: list[threading.Thread] = []
    if mode == "no-accept":
        server.listen(0)
        # Fill the backlog with our own connections so the next connect blocks.
        while True:
            filler = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            filler.setblocking(False)
            try:
                filler.connect(str(path))
            except BlockingIOError:
                filler.close()
                break
            held.append(filler)
    else:
        server.listen(8)
        server.settimeout(0.05)

        def answer(conn: socket.socket) -> None:
            with contextlib.suppress(OSError):
                conn.settimeout(0.05)
                with contextlib.suppress(TimeoutError):
                    conn.recv(4096)
                stop.wait()

        def serve() -> None:
            while not stop.is_set():
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                held.append(conn)
                t = threading.Thread(target=answer, args=(conn,), daemon=True)
                threads.append(t)
                t.start()

        t = threading.Thread(target=serve, daemon=True)
        threads.append(t)
        t.start()
    try:
        yield path
    finally:
        stop.set()
        for t in threads:
            t.join(2)
        for conn in held:
            conn.close()
        server.close()
