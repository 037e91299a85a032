"""Pure request pacing: one token bucket over every API request of a monitor, and each server's Retry-After."""

from __future__ import annotations

import email.utils
import math
from collections.abc import Callable
from datetime import UTC, datetime


class Pacer:
    """When the next request may go: at most *rate* per second on average, *burst* at once, never before a
    server's Retry-After. Every retry path (relists after 410, watches that end at once, errors) goes through
    it, so none can exceed the rate, while a first list and watch, or a watch after a normal timeout, go at once.
    """

    def __init__(self, *, rate: float, burst: int, clock: Callable[[], float]) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock()
        self._not_before: dict[str, float] = {}

    def reserve(self, server: str) -> float:
        """Take the next request slot for *server*; returns the seconds to wait before sending it."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
        self._updated = now
        token_at = now if self._tokens >= 1 else now + (1 - self._tokens) / self._rate
        # The token is spent now even when the request waits: callers queue behind each other, never overtake.
        self._tokens -= 1
        return max(token_at, self._not_before.get(server, now)) - now

    def retry_after(self, server: str, seconds: float) -> None:
        """*server* asked for no request before *seconds* from now."""
        self._not_before[server] = max(self._not_before.get(server, 0.0), self._clock() + max(0.0, seconds))


def retry_after_seconds(value: str | None, *, cap: float, now: datetime | None = None) -> float | None:
    """The delay a Retry-After header asks for (delta-seconds or an HTTP date), at most *cap*; None if unreadable."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return min(cap, float(text))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return min(cap, max(0.0, math.ceil(seconds)))
