"""The handler's two sockets: the master socket (lines from clients) and the log socket (copied to stdout).

Their threads only read and hand each ``reload`` line to a callback that enqueues it; they never act.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import threading
from collections.abc import Callable
from pathlib import Path

from haproxy_reload_handler.log import log

MAX_LINE = 4096
MAX_CLIENTS = 64
# How long a client's connection waits for the outcome of the reloads it asked for before it is closed.
REPLY_WAIT = 60.0


class Reply:
    """The outcome of one ``reload`` line, filled by the main loop and written back to the client as one line."""

    def __init__(self) -> None:
        self.text = ""
        self.done = threading.Event()

    def resolve(self, text: str) -> None:
        if not self.done.is_set():
            self.text = text
            self.done.set()


class SocketServer:
    """Binds, serves and finally removes the master socket and the optional log socket."""

    def __init__(
        self, *, master_socket: Path, log_socket: Path | None, mode: int, on_reload: Callable[[Reply], None]
    ) -> None:
        self.master_socket = master_socket
        self.log_socket = log_socket
        self.mode = mode
        self.on_reload = on_reload
        self.listener: socket.socket | None = None
        self.log_sock: socket.socket | None = None
        self.owned_paths: dict[Path, tuple[int, int]] = {}
        self.clients: set[socket.socket] = set()
        self.clients_lock = threading.Lock()
        self.client_slots = threading.BoundedSemaphore(MAX_CLIENTS)
        self.next_client = 0

    def start(self) -> None:
        """Replace stale socket files, bind both sockets and start their threads; SystemExit names the path."""
        paths = [p for p in (self.master_socket, self.log_socket) if p is not None]
        # Stale sockets from a previous container run would make bind() fail (the reference's socat broke).
        for path in paths:
            self._remove_stale(path)
            path.parent.mkdir(parents=True, exist_ok=True)
        if self.log_socket is not None:
            self.log_sock = self._bind(self.log_socket, socket.SOCK_DGRAM)
            threading.Thread(target=self._copy_logs, name="log-copy", daemon=True).start()
        self.listener = self._bind(self.master_socket, socket.SOCK_STREAM)
        self.listener.listen(16)
        threading.Thread(target=self._accept_loop, name="accept", daemon=True).start()

    def stop_accepting(self) -> None:
        if self.listener is not None:
            self.listener.close()

    def close(self) -> None:
        """Close every connection and socket and remove the socket files that are still ours."""
        self.stop_accepting()
        with self.clients_lock:
            for conn in self.clients:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        if self.log_sock is not None:
            self.log_sock.close()
        for path, ident in self.owned_paths.items():
            # Only our own socket: a newer handler may already have bound the same path.
            with contextlib.suppress(OSError):
                st = path.stat()
                if (st.st_dev, st.st_ino) == ident:
                    path.unlink()

    def _remove_stale(self, path: Path) -> None:
        try:
            st = path.lstat()
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            raise SystemExit(f"{path} is a directory; remove it or choose another socket path")
        path.unlink()
        log(f"removed stale {path}")

    def _bind(self, path: Path, kind: int) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, kind)
        try:
            sock.bind(str(path))
        except OSError as exc:
            sock.close()
            raise SystemExit(f"cannot bind {path}: {exc.strerror}; check the directory") from exc
        os.chmod(path, self.mode)
        st = path.stat()
        self.owned_paths[path] = (st.st_dev, st.st_ino)
        return sock

    def _copy_logs(self) -> None:
        assert self.log_sock is not None
        while True:
            try:
                data = self.log_sock.recv(65536)
            except OSError:
                return
            if not data.endswith(b"\n"):
                data += b"\n"
            with contextlib.suppress(OSError):
                os.write(1, data)

    def _accept_loop(self) -> None:
        assert self.listener is not None
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            if not self.client_slots.acquire(blocking=False):
                log(f"too many clients ({MAX_CLIENTS}); closing a new connection")
                conn.close()
                continue
            self.next_client += 1
            with self.clients_lock:
                self.clients.add(conn)
            threading.Thread(
                target=self._serve_client, args=(conn, self.next_client), name="client", daemon=True
            ).start()

    def _serve_client(self, conn: socket.socket, client: int) -> None:
        buf = b""
        replies: list[Reply] = []
        try:
            while True:
                try:
                    data = conn.recv(4096)
                except OSError:
                    break
                if not data:
                    break
                buf += data
                while b"\n" in buf:
                    raw, buf = buf.split(b"\n", 1)
                    self._line(client, raw, replies)
                # Every complete line is queued first (they coalesce into one reload), then answered.
                self._answer(conn, replies)
                if len(buf) > MAX_LINE:
                    log(f"client {client}: line longer than {MAX_LINE} bytes; closing the connection")
                    buf = b""
                    break
            if buf.strip():
                # A line cut by the client closing: honour it only if it is a complete word.
                self._line(client, buf, replies)
                self._answer(conn, replies)
        finally:
            with self.clients_lock:
                self.clients.discard(conn)
            conn.close()
            self.client_slots.release()

    @staticmethod
    def _answer(conn: socket.socket, replies: list[Reply]) -> None:
        """One line per reload asked on this connection, once its outcome is known (the client may be gone)."""
        for reply in replies:
            text = reply.text if reply.done.wait(REPLY_WAIT) else "reload unconfirmed: no outcome in time"
            with contextlib.suppress(OSError):
                conn.sendall(text.encode() + b"\n")
        replies.clear()

    def _line(self, client: int, raw: bytes, replies: list[Reply]) -> None:
        line = raw.decode(errors="replace").strip()
        if not line:
            return
        if line == "reload":
            reply = Reply()
            replies.append(reply)
            self.on_reload(reply)
        else:
            log(f"client {client}: ignored unknown command {line[:80]!r} (only 'reload' is supported)")
