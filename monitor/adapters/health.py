"""HAProxy health sample: one bounded GET of ``/haproxy_monitor``, turned into ok/status/reason/latency."""

from __future__ import annotations

import time
from dataclasses import dataclass

import requests


@dataclass(frozen=True)
class HealthSample:
    """One health observation; ``reason`` is a single line fit for a log or /readyz."""

    ok: bool
    status: int | None
    reason: str
    latency: float


def _describe(exc: requests.RequestException, url: str, timeout: float) -> str:
    if isinstance(exc, requests.Timeout):
        return f"no answer from {url} within {timeout:g}s"
    if isinstance(exc, requests.ConnectionError):
        text = str(exc)
        if "Connection refused" in text:
            return f"connection refused to {url}"
        if "timed out" in text:
            return f"no answer from {url} within {timeout:g}s"
        if "BadStatusLine" in text or "RemoteDisconnected" in text:
            return f"invalid HTTP response from {url}"
        return f"cannot connect to {url}: {_last_line(text)}"
    return f"request to {url} failed: {_last_line(str(exc))}"


def _last_line(text: str) -> str:
    # urllib3 nests causes as "...: ...(...)"; the tail is the useful part and must stay on one line.
    line = " ".join(text.split())
    return line[-200:]


def check_health(url: str, *, timeout: float) -> HealthSample:
    """GET url; ok only on HTTP 200. Never raises; returns within about ``timeout`` for a silent server.

    ``timeout`` bounds the connect and each read of the status line and headers; the body is never
    read (only the status matters), so a server trickling an endless body cannot hold the loop.
    """
    start = time.monotonic()

    def sample(ok: bool, status: int | None, reason: str) -> HealthSample:
        return HealthSample(ok=ok, status=status, reason=reason, latency=time.monotonic() - start)

    session = requests.Session()
    # HTTP(S)_PROXY from the environment must never reroute a localhost health check.
    session.trust_env = False
    try:
        # stream=True reads only the status line and headers; closing drops the body unread.
        with session.get(url, timeout=(timeout, timeout), stream=True, allow_redirects=False) as resp:
            status = resp.status_code
    except requests.RequestException as exc:
        return sample(False, None, _describe(exc, url, timeout))
    except (ValueError, OSError) as exc:  # e.g. a URL requests cannot parse
        return sample(False, None, f"request to {url} failed: {_last_line(str(exc))}")
    finally:
        session.close()
    elapsed_ms = (time.monotonic() - start) * 1000
    if status == 200:
        return sample(True, status, f"200 from {url} in {elapsed_ms:.0f} ms")
    return sample(False, status, f"HTTP {status} from {url} (want 200)")
