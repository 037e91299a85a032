"""``monitor probe``: one bounded HTTP GET for keepalived/kubelet exec probes (exit 0 on 200, else 1).

Runs every couple of seconds from keepalived, so it imports only the standard library's socket layer
and speaks just enough HTTP/1.0 to read a status line under one hard deadline.
"""

from __future__ import annotations

import argparse
import functools
import socket
import sys
import time
from urllib.parse import SplitResult, urlsplit

DEFAULT_URL = "http://localhost:9444/haproxy_ready"
DEFAULT_TIMEOUT = 2.0

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class ProbeResult:
    """Outcome of one probe: HTTP status when one was read, and the single line printed for humans.

    A plain class, not a dataclass: ``dataclasses`` pulls in ``inspect`` and would add ~8 ms to
    every keepalived run.
    """

    __slots__ = ("elapsed", "line", "ok", "status")

    def __init__(self, ok: bool, status: int | None, line: str, elapsed: float) -> None:
        self.ok, self.status, self.line, self.elapsed = ok, status, line, elapsed

    def __repr__(self) -> str:
        return (
            f"ProbeResult(ok={self.ok}, status={self.status}, line={self.line!r}, elapsed={self.elapsed:.4f})"
        )


class _Fail(Exception):
    """A probe failure whose message is the reason shown after ``fail:``."""


@functools.lru_cache(maxsize=8)  # the sidecar's health check asks for the same URL every check interval
def _target(url: str) -> tuple[SplitResult, str, int]:
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise ValueError(f"--url {url!r}: only http:// URLs are supported")
    try:
        port = parts.port or 80
    except ValueError as exc:
        raise ValueError(f"--url {url!r}: bad port") from exc
    if not parts.hostname:
        raise ValueError(f"--url {url!r}: no host")
    return parts, parts.hostname, port


def _connect(host: str, port: int, deadline: float, url: str) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise _Fail(f"cannot resolve {host!r} for {url}: {exc.strerror}") from exc
    refused = False
    for family, kind, proto, _, addr in infos:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        sock = socket.socket(family, kind, proto)
        sock.settimeout(remaining)
        try:
            sock.connect(addr)
            return sock
        except ConnectionRefusedError:
            refused = True
            sock.close()
        except TimeoutError:
            sock.close()
            break
        except OSError:
            sock.close()
    if refused:
        raise _Fail(f"connection refused to {url}")
    raise _Fail(f"cannot connect to {url}")


def _status_line(sock: socket.socket, deadline: float, url: str, timeout: float) -> int:
    buf = b""
    while b"\n" not in buf:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _Fail(f"no answer from {url} within {timeout:g}s")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(1024)
        except TimeoutError as exc:
            raise _Fail(f"no answer from {url} within {timeout:g}s") from exc
        except OSError as exc:
            raise _Fail(f"connection to {url} failed: {exc.strerror or exc}") from exc
        if not chunk:
            if not buf:
                raise _Fail(f"connection closed without an answer by {url}")
            break
        buf += chunk
        if len(buf) > 4096:
            break
    fields = buf.split(b"\n", 1)[0].split()
    if len(fields) < 2 or not fields[0].startswith(b"HTTP/") or not fields[1].isdigit():
        raise _Fail(f"invalid HTTP response from {url}")
    return int(fields[1])


def probe(url: str, *, timeout: float) -> ProbeResult:
    """GET url once; everything (resolve, connect, read) fits in ``timeout`` seconds. Never raises for I/O."""
    start = time.monotonic()
    deadline = start + timeout
    parts, host, port = _target(url)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    host_header = f"[{host}]" if ":" in host else host
    request = f"GET {path} HTTP/1.0\r\nHost: {host_header}:{port}\r\nUser-Agent: monitor-probe\r\n\r\n"
    status: int | None = None
    try:
        sock = _connect(host, port, deadline, url)
        with sock:
            try:
                sock.sendall(request.encode("ascii"))
            except OSError as exc:
                raise _Fail(f"connection to {url} failed: {exc.strerror or exc}") from exc
            status = _status_line(sock, deadline, url, timeout)
    except _Fail as exc:
        return ProbeResult(ok=False, status=status, line=f"fail: {exc}", elapsed=time.monotonic() - start)
    elapsed = time.monotonic() - start
    if status == 200:
        return ProbeResult(True, status, f"ok: 200 from {url} in {elapsed * 1000:.0f} ms", elapsed)
    return ProbeResult(False, status, f"fail: HTTP {status} from {url} (want 200)", elapsed)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="monitor probe",
        description="GET a health URL once; exit 0 on HTTP 200, 1 otherwise (for keepalived and kubelet).",
    )
    parser.add_argument("--url", default=DEFAULT_URL, help=f"URL to GET (default {DEFAULT_URL})")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds for the whole probe (default {DEFAULT_TIMEOUT:g})",
    )
    return parser


def _usage(parser: argparse.ArgumentParser, message: str) -> int:
    parser.print_usage(sys.stderr)
    print(f"{parser.prog}: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def main(argv: list[str]) -> int:
    """Entry point of ``monitor probe``; argv excludes the program and the ``probe`` word."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed usage (or --help)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if not 0 < args.timeout <= 3600:
        return _usage(parser, f"--timeout {args.timeout:g}: must be between 0 and 3600 seconds")
    try:
        result = probe(args.url, timeout=args.timeout)
    except ValueError as exc:
        return _usage(parser, str(exc))
    print(result.line, flush=True)
    return EXIT_OK if result.ok else EXIT_FAIL


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
