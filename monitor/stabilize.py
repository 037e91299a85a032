"""Pure state machines over time and samples: the settle window for backend sets, and on/off hysteresis."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


class Settle(Generic[T]):
    """Hold back a changed value until it has stayed unchanged for ``quiet`` seconds.

    A value that keeps changing is still applied after ``max_wait`` seconds from the first unapplied change, so
    a node flapping forever cannot freeze the configuration. A change that returns to the applied value before
    the window closes is dropped: nothing changed, so nothing is applied. The very first value is due at once
    (there is nothing to protect yet). Times are plain floats from an injected monotonic clock.
    """

    def __init__(self, *, quiet: float, max_wait: float) -> None:
        if quiet < 0 or max_wait < quiet:
            raise ValueError("settle: need 0 <= quiet <= max_wait")
        self._quiet = quiet
        self._max_wait = max_wait
        self._applied: T | None = None
        self._has_applied = False
        self._pending: T | None = None
        self._has_pending = False
        self._last_change = 0.0
        self._first_change = 0.0

    def observe(self, value: T, now: float) -> None:
        """Record the latest desired value at time ``now``."""
        if self._has_pending and value == self._pending:
            return
        if self._has_applied and value == self._applied:
            self._has_pending = False
            self._pending = None
            return
        if not self._has_pending:
            self._first_change = now
        self._pending = value
        self._has_pending = True
        self._last_change = now

    def deadline(self) -> float | None:
        """When the pending value becomes due, or None when nothing is pending."""
        if not self._has_pending:
            return None
        if not self._has_applied:
            return self._last_change
        return min(self._last_change + self._quiet, self._first_change + self._max_wait)

    def pending_since(self) -> float | None:
        """When the pending value was observed (its latest arrival), or None when nothing is pending."""
        return self._last_change if self._has_pending else None

    def take_due(self, now: float) -> tuple[bool, T | None]:
        """Return ``(True, value)`` and mark it applied when the pending value is due at ``now``."""
        deadline = self.deadline()
        if deadline is None or now < deadline:
            return False, None
        value = self._pending
        self._applied = value
        self._has_applied = True
        self._pending = None
        self._has_pending = False
        return True, value


@dataclass
class Hysteresis:
    """A boolean that flips only after ``on_after`` consecutive True or ``off_after`` consecutive False samples."""

    on_after: int
    off_after: int
    state: bool = False
    _streak: int = 0

    def __post_init__(self) -> None:
        if self.on_after < 1 or self.off_after < 1:
            raise ValueError("hysteresis thresholds must be at least 1")

    def observe(self, sample: bool) -> bool:
        """Feed one sample; return True when this sample flipped the state."""
        if sample == self.state:
            self._streak = 0
            return False
        self._streak += 1
        if self._streak >= (self.on_after if sample else self.off_after):
            self.state = sample
            self._streak = 0
            return True
        return False


@dataclass
class Backoff:
    """When to try again after consecutive failures: ``first`` seconds, doubling up to ``cap``.

    ``jitter`` (a factor near 1, drawn by the caller) spreads retries of several monitors apart.
    """

    first: float
    cap: float
    due: float | None = None  # when the next attempt is due; None while nothing failed
    failures: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.first <= self.cap:
            raise ValueError("backoff: need 0 < first <= cap")

    def failed(self, now: float, *, jitter: float = 1.0) -> float:
        """One more failure at ``now``: schedule the next attempt and return its delay."""
        delay = min(self.cap, self.first * 2.0 ** min(self.failures, 64)) * jitter
        self.failures += 1
        self.due = now + delay
        return delay

    def succeeded(self) -> None:
        self.failures = 0
        self.due = None
