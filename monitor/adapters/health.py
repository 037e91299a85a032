"""HAProxy health sample: one bounded GET of ``/haproxy_monitor``, turned into ok/status/reason/latency."""

from __future__ import annotations

import time
from dataclasses import dataclass

from monitor.probe import probe


@dataclass(frozen=True)
class HealthSample:
    """One health observation; ``reason`` is a single line fit for a log or /readyz."""

    ok: bool
    status: int | None
    reason: str
    latency: float


def check_health(url: str, *, timeout: float) -> HealthSample:
    """GET url; ok only on HTTP 200. Never raises; returns within about ``timeout`` for a silent server.

    The same few lines of HTTP/1.0 as ``monitor probe`` (resolve, connect and the status line all within
    ``timeout``; the body is never read, so a server trickling an endless body cannot hold the loop, and
    no proxy from the environment applies). It runs every check interval for as long as the sidecar
    lives: an HTTP library's session per check cost about four times the CPU. HAProxy's ``monitor-uri``
    is plain HTTP, so only http:// URLs are supported.
    """
    start = time.monotonic()
    try:
        result = probe(url, timeout=timeout)
    except ValueError as exc:  # a URL the probe cannot use; its message names the --url option
        reason = str(exc).split(": ", 1)[-1]
        return HealthSample(False, None, f"request to {url} failed: {reason}", time.monotonic() - start)
    reason = result.line.removeprefix("ok: ").removeprefix("fail: ")
    return HealthSample(ok=result.ok, status=result.status, reason=reason, latency=result.elapsed)
