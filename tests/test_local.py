"""The local layer on its own: LRU bounds, expiry, version-aware discard, fail-safe window."""

from __future__ import annotations

import math
from time import monotonic

from redicache_async.local import LocalLayer


def put(
    layer: LocalLayer,
    key: str,
    size: int = 1,
    *,
    version: int = 1,
    ttl: float = math.inf,
    stale_ttl: float = 0.0,
) -> bool:
    return layer.put(
        key,
        key.upper(),
        version=version,
        size=size,
        expires_at=monotonic() + ttl,
        stale_ttl=stale_ttl,
    )


def test_lru_evicts_least_recently_used_beyond_max_entries() -> None:
    layer = LocalLayer(max_entries=3, max_bytes=1_000)
    for key in "abc":
        put(layer, key)
    assert layer.fresh("a") is not None  # "a" is now the most recently used
    put(layer, "d")
    assert [k for k in "abcd" if layer.fresh(k) is not None] == ["a", "c", "d"]
    assert layer.evictions == 1
    assert len(layer) == 3


def test_bytes_bound_evicts_until_it_fits() -> None:
    layer = LocalLayer(max_entries=100, max_bytes=10)
    put(layer, "a", 4)
    put(layer, "b", 4)
    put(layer, "c", 4)
    assert layer.fresh("a") is None
    assert layer.bytes == 8
    assert len(layer) == 2


def test_value_larger_than_max_bytes_is_not_stored_and_drops_an_older_copy() -> None:
    layer = LocalLayer(max_entries=100, max_bytes=10)
    assert put(layer, "a", 5)
    assert not put(layer, "a", 11)
    assert layer.fresh("a") is None
    assert layer.bytes == 0


def test_zero_entries_turns_the_layer_off() -> None:
    layer = LocalLayer(max_entries=0, max_bytes=10)
    assert not put(layer, "a")
    assert layer.fresh("a") is None


def test_replacing_an_entry_keeps_the_byte_count_right() -> None:
    layer = LocalLayer(max_entries=10, max_bytes=100)
    put(layer, "a", 30)
    put(layer, "a", 10)
    assert layer.bytes == 10


def test_expired_entry_is_a_miss_and_is_dropped_without_a_stale_window() -> None:
    layer = LocalLayer(max_entries=10, max_bytes=100)
    put(layer, "a", 3, ttl=-0.001)
    assert layer.fresh("a") is None
    assert len(layer) == 0
    assert layer.bytes == 0


def test_stale_window_keeps_an_expired_entry_for_fail_safe_use_only() -> None:
    layer = LocalLayer(max_entries=10, max_bytes=100)
    put(layer, "a", ttl=-0.001, stale_ttl=60)
    assert layer.fresh("a") is None
    stale = layer.stale("a")
    assert stale is not None
    assert stale.value == "A"
    put(layer, "b", ttl=-61, stale_ttl=60)
    assert layer.stale("b") is None


def test_discard_below_version_keeps_newer_entries() -> None:
    layer = LocalLayer(max_entries=10, max_bytes=100)
    put(layer, "a", version=5)
    assert not layer.discard("a", below_version=5)
    assert not layer.discard("a", below_version=4)
    assert layer.discard("a", below_version=6)
    assert layer.fresh("a") is None
    assert not layer.discard("missing")


def test_a_put_never_replaces_a_fresh_entry_with_an_older_version() -> None:
    layer = LocalLayer(10, 1000)
    assert layer.put("k", "new", version=2, size=1, expires_at=math.inf, stale_ttl=0.0)
    assert not layer.put("k", "old", version=1, size=1, expires_at=math.inf, stale_ttl=0.0)
    entry = layer.fresh("k")
    assert entry is not None
    assert (entry.value, entry.version) == ("new", 2)
    assert layer.put("k", "newer", version=3, size=1, expires_at=math.inf, stale_ttl=0.0)
    assert layer.fresh("k").value == "newer"  # type: ignore[union-attr]


def test_an_older_version_may_replace_an_entry_that_is_no_longer_fresh() -> None:
    """After a flush (a failover may have lost the newer write), Redis's answer is the truth,
    even when its version is lower."""
    layer = LocalLayer(10, 1000)
    layer.put("k", "lost", version=2, size=1, expires_at=math.inf, stale_ttl=60.0)
    layer.expire(stale_ttl=60.0)
    assert layer.put("k", "kept", version=1, size=1, expires_at=math.inf, stale_ttl=0.0)
    assert layer.fresh("k").value == "kept"  # type: ignore[union-attr]


def test_nothing_is_fresh_while_the_layer_is_not_trusted_but_stays_a_fallback() -> None:
    layer = LocalLayer(10, 1000)
    put(layer, "k")
    layer.trusted = False
    assert layer.fresh("k") is None
    assert layer.stale("k") is not None
    layer.trusted = True
    assert layer.fresh("k") is not None


def test_fresh_counts_a_hit_and_peek_does_not() -> None:
    layer = LocalLayer(10, 1000)
    layer.put("k", "v", version=1, size=1, expires_at=math.inf, stale_ttl=0.0)
    assert layer.peek("k") is not None
    assert layer.fresh("missing") is None
    assert layer.hits == 0  # a look, and a miss, are no hits
    assert layer.fresh("k") is not None
    assert layer.hits == 1


def test_entries_read_during_a_scan_of_cold_keys_outlive_the_cold_ones() -> None:
    """A hit sets the entry's reference bit: hot keys read between the puts of a long scan of
    keys nobody reads again are spared each time the eviction hand passes them, and the cold
    keys go instead. Deterministic: no clock, no randomness."""
    layer = LocalLayer(max_entries=50, max_bytes=1 << 20)
    hot = [f"hot{i}" for i in range(10)]
    for key in hot:
        put(layer, key)
    for i in range(1_000):
        put(layer, f"cold{i}")
        if i % 10 == 0:  # each hot key is read again long before the hand comes back to it
            for key in hot:
                assert layer.fresh(key) is not None, (key, i)
    assert all(layer.peek(key) is not None for key in hot)
    assert len(layer) == 50
    assert layer.evictions == 1_010 - 50
    # The 40 other places hold the most recent cold keys.
    assert sum(layer.peek(f"cold{i}") is not None for i in range(960, 1_000)) == 40


def test_without_reads_the_oldest_entry_goes_first() -> None:
    layer = LocalLayer(max_entries=3, max_bytes=1_000)
    for key in "abcd":
        put(layer, key)
    assert [k for k in "abcd" if layer.peek(k) is not None] == ["b", "c", "d"]


def test_the_entry_being_put_is_kept_even_when_every_other_one_was_read() -> None:
    layer = LocalLayer(max_entries=3, max_bytes=1_000)
    for key in "abc":
        put(layer, key)
        assert layer.fresh(key) is not None
    assert put(layer, "d")
    assert layer.peek("d") is not None
    assert len(layer) == 3
    assert layer.evictions == 1


def test_a_replaced_entry_leaves_a_dead_slot_that_never_evicts_its_successor() -> None:
    layer = LocalLayer(max_entries=4, max_bytes=1_000)
    put(layer, "k", size=5, version=1)
    put(layer, "k", size=7, version=2)  # the first slot in the ring is now dead
    assert layer.fresh("k") is not None  # read: the hand spares it once
    put(layer, "a")
    put(layer, "b")
    put(layer, "c")
    put(layer, "d")  # five keys for four places
    assert layer.evictions == 1
    assert [key for key in "kabcd" if layer.peek(key) is None] == ["a"]
    assert layer.peek("k").version == 2  # type: ignore[union-attr]
    assert layer.bytes == 7 + 3


def test_dead_slots_of_dropped_and_replaced_keys_do_not_grow_the_ring() -> None:
    layer = LocalLayer(max_entries=4, max_bytes=1_000)
    for round_ in range(1_000):
        put(layer, "k", version=round_ + 1)  # a replacement each round
        layer.discard("gone")
        put(layer, "gone")
    assert len(layer._ring) <= 2 * len(layer) + 64
    assert len(layer) == 2
    assert layer.bytes == 2


def test_bounds_hold_under_a_mix_of_puts_reads_and_drops() -> None:
    layer = LocalLayer(max_entries=20, max_bytes=60)
    for i in range(2_000):
        key = f"k{i % 37}"
        put(layer, key, size=1 + i % 5, version=i + 1)
        if i % 3 == 0:
            layer.fresh(f"k{(i * 7) % 37}")
        if i % 11 == 0:
            layer.discard(f"k{(i * 5) % 37}")
        assert len(layer) <= 20
        assert layer.bytes <= 60
        assert layer.bytes == sum(e.size for e in layer.entries.values())


def test_expired_entries_keep_their_place_in_eviction_and_the_counts_stay_right() -> None:
    """Ending freshness puts a copy with the earlier deadline in each entry's place (an entry
    is its deadline, a float): the copy keeps the entry's reference bit, and the layer's
    counts and bounds stay exact across repeated flushes."""
    layer = LocalLayer(max_entries=3, max_bytes=1_000)
    for key in "abc":
        put(layer, key, size=2)
    assert layer.fresh("a") is not None
    assert layer.expire(stale_ttl=60.0) == 3
    assert all(layer.fresh(key) is None and layer.stale(key) is not None for key in "abc")
    put(layer, "d", size=2)  # "a" was read before the flush: "b" goes
    assert [key for key in "abcd" if layer.stale(key) is None] == ["b"]
    assert (len(layer), layer.bytes, layer.evictions) == (3, 6, 1)
    for _ in range(200):
        layer.expire(stale_ttl=60.0)
        put(layer, "d", size=2, version=2)
    assert len(layer._ring) <= 2 * len(layer) + 64
    assert layer.bytes == 6
