"""HAProxy health sample: one bounded GET of ``/haproxy_monitor``, turned into ok/status/reason/latency."""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from monitor.adapters import localhttp


@dataclass(frozen=True)
class HealthSample:
    """One health observation; ``reason`` is a single line fit for a log or /readyz."""

    ok: bool
    status: int | None
    reason: str
    latency: float


def _last_line(text: str) -> str:
    # Nested causes read as "...: ...(...)"; the tail is the useful part and must stay on one line.
    line = " ".join(text.split())
    return line[-200:]


def _describe(exc: Exception, url: str, timeout: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer from {url} within {timeout:g}s"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused to {url}"
    if isinstance(exc, http.client.HTTPException | ConnectionResetError):
        return f"invalid HTTP response from {url}"
    if isinstance(exc, ssl.SSLError | OSError):
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return f"cannot connect to {url}: {_last_line(reason)}"
    return f"request to {url} failed: {_last_line(str(exc))}"


def check_health(url: str, *, timeout: float) -> HealthSample:
    """GET url; ok only on HTTP 200. Never raises; returns within about ``timeout`` whatever the server does.

    ``timeout`` is one deadline for the whole exchange (connect, request, status line and headers), not per
    read: a server trickling its headers a byte at a time is cut when it passes. The body is never read
    (only the status matters). HTTP(S)_PROXY from the environment is ignored: a localhost health check must
    never be rerouted.
    """
    start = time.monotonic()

    def sample(ok: bool, status: int | None, reason: str) -> HealthSample:
        return HealthSample(ok=ok, status=status, reason=reason, latency=time.monotonic() - start)

    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        return sample(False, None, f"request to {url} failed: {_last_line(str(exc))}")
    if parts.scheme not in ("http", "https") or not host:
        return sample(False, None, f"request to {url} failed: not an http:// or https:// URL")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if parts.scheme == "http":
        # The usual case, every few seconds for ever: a plain exchange on a kept connection costs a fraction
        # of http.client's CPU (no timer thread, no new connection; the deadline is each read's timeout).
        try:
            status = _plain_status(host, port or 80, parts.netloc.rpartition("@")[2], target, start + timeout)
        except Exception as exc:  # a health check reports every failure, it never raises
            return sample(False, None, _describe(exc, url, timeout))
    else:
        status_or_sample = _tls_status(url, host, port, target, timeout, sample)
        if isinstance(status_or_sample, HealthSample):
            return status_or_sample
        status = status_or_sample
    elapsed_ms = (time.monotonic() - start) * 1000
    if status == 200:
        return sample(True, status, f"200 from {url} in {elapsed_ms:.0f} ms")
    return sample(False, status, f"HTTP {status} from {url} (want 200)")


_MAX_BODY = 64 * 1024  # HAProxy's monitor-uri page is 58 bytes; the body is only read to keep the connection


def _plain_status(host: str, port: int, authority: str, target: str, deadline: float) -> int:
    """The status code of one HTTP/1.1 GET, read before ``deadline`` (monotonic); raises on any failure."""
    request = f"GET {target} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: haproxy-monitor\r\n\r\n"
    answer = localhttp.get(
        host, port, request.encode("ascii", "strict"), deadline=deadline, body=False, max_body=_MAX_BODY
    )
    return answer.status


def _tls_status(
    url: str,
    host: str,
    port: int | None,
    target: str,
    timeout: float,
    sample: Callable[[bool, int | None, str], HealthSample],
) -> int | HealthSample:
    """https: http.client with a timer that turns its per-read timeout into one deadline."""
    conn = http.client.HTTPSConnection(host, port, timeout=timeout)
    # http.client's timeout applies to each recv; a timer that shuts the socket down makes it a deadline.
    cut = threading.Event()

    def stop() -> None:
        cut.set()
        sock = conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(timeout, stop)
    timer.daemon = True
    timer.start()
    resp: http.client.HTTPResponse | None = None
    try:
        conn.connect()
        if cut.is_set():  # the connect used up the deadline before the timer had a socket to shut
            raise TimeoutError
        conn.request("GET", target, headers={"Connection": "close", "User-Agent": "haproxy-monitor"})
        resp = conn.getresponse()
        status = resp.status
        if cut.is_set():
            raise TimeoutError
    except Exception as exc:  # a health check reports every failure, it never raises
        return sample(False, None, _describe(TimeoutError() if cut.is_set() else exc, url, timeout))
    finally:
        timer.cancel()
        if resp is not None:
            resp.close()  # the body is dropped unread
        conn.close()
    return status
