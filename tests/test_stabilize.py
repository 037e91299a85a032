"""Settle window and hysteresis, driven by a fake clock."""

from __future__ import annotations

from monitor.settings import Settings
from monitor.stabilize import Hysteresis, Settle

DEFAULTS = Settings  # the class attributes are the shipped defaults


def run_schedule(settle: Settle[str], changes: list[tuple[float, str]], until: float, step: float = 0.01):
    """Feed (time, value) observations and poll every ``step``; return the (time, value) applies."""
    applied: list[tuple[float, str]] = []
    pending = sorted(changes)
    t = 0.0
    while t <= until:
        while pending and pending[0][0] <= t:
            settle.observe(pending.pop(0)[1], t)
        due, value = settle.take_due(t)
        if due:
            applied.append((round(t, 2), value))
        t = round(t + step, 4)
    return applied


def test_the_first_backend_set_is_applied_immediately():
    settle: Settle[str] = Settle(quiet=DEFAULTS.settle, max_wait=DEFAULTS.settle_max)
    assert run_schedule(settle, [(0.0, "a")], until=0.5) == [(0.0, "a")]


def test_a_single_change_is_applied_within_two_seconds_with_the_default_window():
    settle: Settle[str] = Settle(quiet=DEFAULTS.settle, max_wait=DEFAULTS.settle_max)
    applied = run_schedule(settle, [(0.0, "a"), (5.0, "b")], until=10)
    assert applied[0] == (0.0, "a")
    assert applied[1][1] == "b"
    assert applied[1][0] - 5.0 <= 2.0 - 0.3, "leave ≥ 0.3 s for watch delivery, render and reload"
    assert len(applied) == 2


def test_a_node_flapping_at_one_hertz_for_twelve_seconds_causes_at_most_two_applies():
    settle: Settle[str] = Settle(quiet=DEFAULTS.settle, max_wait=DEFAULTS.settle_max)
    changes = [(0.0, "base")]
    # The node's address toggles every half second (a 1 Hz flap) from t=10 to t=22.
    for i in range(24):
        changes.append((10.0 + i * 0.5, "flapped" if i % 2 == 0 else "base"))
    applied = run_schedule(settle, changes, until=40)
    after_start = [a for a in applied if a[0] > 0]
    assert len(after_start) <= 2, after_start


def test_a_node_flapping_once_per_second_with_jitter_causes_at_most_two_applies():
    settle: Settle[str] = Settle(quiet=DEFAULTS.settle, max_wait=DEFAULTS.settle_max)
    changes = [(0.0, "base")]
    for i in range(12):  # the state flips every second, ±0.15 s of delivery jitter
        jitter = 0.15 if i % 3 == 0 else -0.1
        changes.append((10.0 + i + jitter, "flapped" if i % 2 == 0 else "base"))
    applied = run_schedule(settle, changes, until=40)
    assert len([a for a in applied if a[0] > 0]) <= 2


def test_a_change_that_reverts_inside_the_window_is_never_applied():
    settle: Settle[str] = Settle(quiet=1.5, max_wait=10)
    applied = run_schedule(settle, [(0.0, "a"), (3.0, "b"), (3.5, "a")], until=10)
    assert applied == [(0.0, "a")]


def test_constant_change_is_still_applied_after_the_maximum_wait():
    settle: Settle[str] = Settle(quiet=1.5, max_wait=4.0)
    changes = [(0.0, "v0")] + [(1.0 + i * 0.5, f"v{i + 1}") for i in range(40)]
    applied = run_schedule(settle, changes, until=30)
    assert applied[1][0] == 5.0, "first unapplied change at t=1 plus max wait 4 s"


def test_repeating_the_pending_value_does_not_restart_the_window():
    settle: Settle[str] = Settle(quiet=1.5, max_wait=10)
    applied = run_schedule(settle, [(0.0, "a"), (1.0, "b"), (1.5, "b"), (2.0, "b")], until=5)
    assert applied[1] == (2.5, "b")


def test_deadline_reports_when_the_pending_value_becomes_due():
    settle: Settle[str] = Settle(quiet=1.5, max_wait=10)
    assert settle.deadline() is None
    settle.observe("a", 0.0)
    assert settle.deadline() == 0.0
    settle.take_due(0.0)
    settle.observe("b", 2.0)
    assert settle.deadline() == 3.5


def test_health_turns_on_after_three_good_samples_and_off_after_eleven_bad():
    h = Hysteresis(on_after=3, off_after=11)
    assert [h.observe(True) for _ in range(3)] == [False, False, True]
    assert h.state is True
    flips = [h.observe(False) for _ in range(10)]
    assert not any(flips) and h.state is True
    assert h.observe(False) is True and h.state is False


def test_a_flapping_health_signal_never_flips_the_state():
    h = Hysteresis(on_after=3, off_after=11)
    for _ in range(50):
        h.observe(True)
        h.observe(True)
        h.observe(False)
    assert h.state is False
    for _ in range(3):
        h.observe(True)
    assert h.state is True
    for _ in range(100):
        h.observe(False)
        h.observe(True)
    assert h.state is True
