"""Back-off between retries: jittered, so that a fleet that saw one outage does not retry in
lock-step, and bounded, so that it neither busy-loops nor waits beyond the plain doubling."""

from __future__ import annotations

import random

from redicache_async.backoff import Backoff, jittered


def test_delays_stay_between_the_floor_and_the_doubling_schedule() -> None:
    delays = Backoff(0.05, 2.0, rng=random.Random(1))
    for attempt in range(1, 60):
        delay = delays.next()
        assert 0.05 <= delay <= min(2.0, 0.05 * 2**attempt)


def test_processes_that_fail_together_retry_apart() -> None:
    fleet = [Backoff(0.05, 2.0, rng=random.Random(seed)) for seed in range(20)]
    for _ in range(6):
        delays = [member.next() for member in fleet]
        # no two members wait alike: with a shared schedule all 20 would
        assert len(set(delays)) == len(delays)


def test_reset_starts_over_from_the_shortest_delays() -> None:
    delays = Backoff(0.05, 2.0, rng=random.Random(2))
    for _ in range(10):
        delays.next()
    delays.reset()
    assert delays.next() <= 0.1


def test_a_cap_below_the_floor_is_the_delay() -> None:
    assert Backoff(1.0, 0.2, rng=random.Random(3)).next() == 0.2


def test_jittered_adds_at_most_the_spread() -> None:
    rng = random.Random(4)
    waits = [jittered(1.0, 0.02, rng=rng) for _ in range(50)]
    assert all(1.0 <= wait <= 1.02 for wait in waits)
    assert len(set(waits)) > 1
