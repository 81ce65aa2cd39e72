"""The circuit breaker's rules, on their own (no Redis involved: it only counts outcomes)."""

from __future__ import annotations

import time

from redicache_async.breaker import CircuitBreaker


def test_opens_after_threshold_failures_in_a_row() -> None:
    breaker = CircuitBreaker(threshold=3, first_window=60.0)
    for _ in range(2):
        assert breaker.allow()
        breaker.failed()
    breaker.succeeded()  # a success in between resets the count
    for _ in range(2):
        assert breaker.allow()
        breaker.failed()
    assert not breaker.is_open
    assert breaker.allow()
    breaker.failed()
    assert breaker.is_open
    assert not breaker.allow()
    assert (breaker.opened, breaker.skipped) == (1, 1)


def test_one_probe_per_window_and_windows_grow_to_the_cap() -> None:
    breaker = CircuitBreaker(threshold=1, first_window=0.001, max_window=0.004)
    breaker.failed()
    windows = []
    for _ in range(4):
        while not breaker.allow():
            pass
        assert not breaker.allow()  # a probe is out: everyone else still skips
        breaker.failed(probe=True)
        windows.append(breaker._window)
    assert windows == [0.002, 0.004, 0.004, 0.004]
    assert breaker.opened == 1  # still the same outage


def test_a_late_failure_of_an_older_call_does_not_free_the_probe_slot() -> None:
    breaker = CircuitBreaker(threshold=1, first_window=0.001)
    breaker.failed()
    while not breaker.allow():
        pass
    breaker.failed()  # a call sent before the breaker opened
    assert not breaker.allow()  # the probe is still out: still one at a time


def test_a_successful_probe_closes_it_and_an_abandoned_one_frees_the_slot() -> None:
    breaker = CircuitBreaker(threshold=1, first_window=0.001)
    breaker.failed()
    while not breaker.allow():
        pass
    breaker.abandoned()  # the probe was cancelled: the next call may probe
    assert breaker.allow()
    breaker.succeeded()
    assert not breaker.is_open
    assert breaker.allow()


def test_close_starts_afresh() -> None:
    """Once closed, the breaker is as new: failures from before no longer count, and the next
    outage opens it for the first window, not for the window the last outage grew to."""
    breaker = CircuitBreaker(threshold=3, first_window=0.001, max_window=60.0)
    for _ in range(3):
        breaker.failed()
    for _ in range(8):  # a failed probe per window: 2 ms, 4 ms ... 256 ms
        while not breaker.allow():
            pass
        breaker.failed(probe=True)
    assert breaker._open_until - time.monotonic() > 0.2
    breaker.close()
    assert not breaker.is_open
    breaker.failed()
    breaker.failed()
    assert not breaker.is_open  # two failures in a row, not three
    breaker.failed()
    assert breaker.is_open
    assert breaker._open_until - time.monotonic() <= 0.001  # the first window again


def test_a_failure_of_a_call_older_than_the_last_close_is_not_counted() -> None:
    """Calls sent to a master that a failover replaced fail after the listener reached the new
    one and closed the breaker: they tell nothing about the new master and must not open it."""
    breaker = CircuitBreaker(threshold=2, first_window=60.0)
    assert breaker.allow()
    before = breaker.epoch
    breaker.close()
    for _ in range(3):
        breaker.failed(epoch=before)
    assert not breaker.is_open
    for _ in range(2):
        breaker.failed(epoch=breaker.epoch)
    assert breaker.is_open
