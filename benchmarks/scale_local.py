"""What a local hit and a local entry cost as the local layer grows, next to a plain dict.

Target (issue 16): at 100k and 1M entries a local hit takes at most 1.5x a plain dict's lookup
of the same keys, measured side by side in one run; the bytes per entry are reported beside the
dict's at every size (1k, 10k, 100k, 1M).

The dict's lookup is the baseline of the hot-path part (``hot_path.py``): an awaited
``async def get(k): return data.get(k)``. The hit is the same shape around the layer, as the
client answers a local hit: ``entry = layer.fresh(k)``, then ``entry.value``. The cost the
client adds on top (``get_or_init``'s own bookkeeping) does not grow with the entries; it is the
hot-path part's figure. The bare calls (``dict.get`` against ``LocalLayer.fresh``, a C call
against a Python one) are printed beside them, without a target.

Both structures hold the same keys and values, each filled the way the cache fills it (see
``memory.py``: keys made anew, values decoded from their JSON payloads; the layer through
``put`` with a microsecond version and a 60 s TTL, the common case). The lookups use key
objects of their own (a caller builds its key; it is not the object stored), in one random
order shared by both, so that a large table is read the way a busy process reads it: from
memory, not from the CPU's cache. Rounds alternate dict, layer, dict, layer, ...; the figure is
the median of the per-round ratios, so that noise from a shared machine hits both alike.

Bytes per entry are what ``tracemalloc`` counts as still allocated once a structure is built,
as in ``memory.py`` (keys and values included).

Beside the table, the hit at 100k entries taken apart (a table in ``RESULTS.md``): each row
adds one piece of ``LocalLayer.fresh`` to the row above, timed the same way (each pass of a row
right after a pass of the dict, its ratio to that pass): (1) the dict; (2)
a method of the layer's that returns the entry, whose ``value`` the caller reads (one Python
call, and the entry: one object more than the dict touches); (3) the trust flag and the
entry's deadline against a constant (the entry is a float: no other object); (4) the deadline
against ``time.monotonic()``; (5) ``fresh`` itself (the shortcut for entries that never
expire, the hit counted, the reference bit set). Rows 2 to 4 are copies of parts of ``fresh``,
for this measurement only.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import platform
import random
import statistics
import sys
import tracemalloc
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from time import monotonic, perf_counter
from typing import Any

from redicache_async import JsonSerializer
from redicache_async.local import LocalEntry, LocalLayer

from .results import Finding, Result, Table

__all__ = ["main", "run"]

SIZES = (1_000, 10_000, 100_000, 1_000_000)
SMOKE_SIZES = (1_000, 10_000)
#: The sizes the latency target applies to: below them a hit is a Python call next to a C one.
TARGET_SIZES = frozenset({100_000, 1_000_000})
TARGET = 1.5
TTL = 60.0
BASE_VERSION = 1_763_900_000_123_456
#: Lookups per timed round (cycled over when the table is smaller).
LOOKUPS = 200_000

Source = tuple[bytes, bytes, bytes]
"""A key's UTF-8 bytes, the value's JSON payload and its version's digits (see memory.py)."""


def _payloads(n: int) -> list[Source]:
    dumps = JsonSerializer().dumps
    return [
        (
            f"user:{i}".encode(),
            dumps({"id": i, "name": f"user-{i}", "active": True}),
            str(BASE_VERSION + i).encode(),
        )
        for i in range(n)
    ]


def build_dict(sources: Sequence[Source]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key, payload, _ in sources:
        data[key.decode()] = json.loads(payload)
    return data


def build_layer(sources: Sequence[Source]) -> LocalLayer:
    layer = LocalLayer(max_entries=len(sources), max_bytes=1 << 40)
    for key, payload, version in sources:
        layer.put(
            key.decode(),
            json.loads(payload),
            version=int(version),
            size=len(payload),
            expires_at=monotonic() + TTL,
            stale_ttl=0.0,
        )
    return layer


def held_bytes(build: Callable[[Sequence[Source]], object], sources: Sequence[Source]) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        structure = build(sources)
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del structure
    gc.collect()
    return after - before


def _time_calls(lookup: Callable[[str], object], keys: Sequence[str]) -> float:
    """Seconds per call over ``keys`` (one pass; the loop is the same for both sides)."""
    started = perf_counter()
    for key in keys:
        lookup(key)
    return (perf_counter() - started) / len(keys)


async def _time_awaited(lookup: Callable[[str], Awaitable[object]], keys: Sequence[str]) -> float:
    started = perf_counter()
    for key in keys:
        await lookup(key)
    return (perf_counter() - started) / len(keys)


@dataclass
class Latency:
    """Median ns per hit, each side, and the median of the per-round ratios."""

    dict_ns: float
    ours_ns: float
    ratio: float


def _latency(dict_times: list[float], ours_times: list[float]) -> Latency:
    return Latency(
        statistics.median(dict_times) * 1e9,
        statistics.median(ours_times) * 1e9,
        statistics.median(o / d for o, d in zip(ours_times, dict_times, strict=True)),
    )


def filled(n: int) -> tuple[dict[str, Any], LocalLayer, list[str]]:
    """A dict and a layer that each hold ``n`` entries, and the keys to look up in them: keys
    of the caller's own, equal to the stored ones but other objects, in a random order."""
    sources = _payloads(n)
    plain = build_dict(sources)
    layer = build_layer(sources)
    del sources
    rng = random.Random(n)
    return plain, layer, [f"user:{rng.randrange(n)}" for _ in range(LOOKUPS)]


async def hit_latency(n: int, rounds: int) -> tuple[Latency, Latency]:
    """The awaited hits (the target) and the bare calls, at ``n`` entries."""
    plain, layer, keys = filled(n)
    if not all(layer.fresh(key) is not None for key in keys[:100]):
        raise AssertionError("the layer lost entries it was filled with")

    async def dict_lookup(key: str) -> Any:
        return plain.get(key)

    fresh = layer.fresh

    async def local_hit(key: str) -> Any:
        entry = fresh(key)
        return None if entry is None else entry.value

    awaited: tuple[list[float], list[float]] = ([], [])
    bare: tuple[list[float], list[float]] = ([], [])
    await _time_awaited(dict_lookup, keys)  # warm both alike
    await _time_awaited(local_hit, keys)
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for _ in range(rounds):
            awaited[0].append(await _time_awaited(dict_lookup, keys))
            awaited[1].append(await _time_awaited(local_hit, keys))
            bare[0].append(_time_calls(plain.get, keys))
            bare[1].append(_time_calls(fresh, keys))
    finally:
        if gc_was:
            gc.enable()
    return _latency(*awaited), _latency(*bare)


# -- the hit taken apart ---------------------------------------------------------------------

#: The size the hit is taken apart at (the smallest the target applies to), and in a smoke run.
ANATOMY_SIZE = 100_000
SMOKE_ANATOMY_SIZE = 10_000
Find = Callable[[str], LocalEntry | None]


def _entry_of(layer: LocalLayer) -> Find:
    entries = layer.entries

    class Probe:
        def find(self, key: str) -> LocalEntry | None:
            return entries.get(key)

    return Probe().find


def _within_constant(layer: LocalLayer) -> Find:
    class Probe:
        def find(self, key: str) -> LocalEntry | None:
            entry = layer.entries.get(key)
            if entry is None or not layer.trusted or entry <= 0.0:
                return None
            return entry

    return Probe().find


def _within_clock(layer: LocalLayer) -> Find:
    class Probe:
        def find(self, key: str) -> LocalEntry | None:
            entry = layer.entries.get(key)
            if entry is None or not layer.trusted or entry <= monotonic():
                return None
            return entry

    return Probe().find


def _awaited(find: Find) -> Callable[[str], Awaitable[Any]]:
    async def hit(key: str) -> Any:
        entry = find(key)
        return None if entry is None else entry.value

    return hit


async def hit_anatomy(n: int, rounds: int) -> list[tuple[str, float, float]]:
    """Each row's median ns per lookup and median ratio to the dict's (see the module's
    docstring), at ``n`` entries. Every timed pass of a row follows a pass of the dict, as in
    the table's rounds, and its ratio is to that pass: a row timed right after another row
    would find the layer's memory warm, which the dict's pass does not leave it. The rows
    take turns in a new order each round (a rotation)."""
    plain, layer, keys = filled(n)

    async def dict_lookup(key: str) -> Any:
        return plain.get(key)

    rows: list[tuple[str, Callable[[str], Awaitable[Any]]]] = [
        ("+ a method returning the entry", _awaited(_entry_of(layer))),
        ("+ trust flag, deadline against a constant", _awaited(_within_constant(layer))),
        ("+ deadline against time.monotonic()", _awaited(_within_clock(layer))),
        ("LocalLayer.fresh", _awaited(layer.fresh)),
    ]
    dict_times: list[float] = []
    times: dict[str, list[float]] = {name: [] for name, _ in rows}
    ratios: dict[str, list[float]] = {name: [] for name, _ in rows}
    for _, lookup in [("", dict_lookup), *rows]:  # warm each alike
        await _time_awaited(lookup, keys)
    hits = layer.hits
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for turn in range(rounds):
            shift = turn % len(rows)
            for name, lookup in rows[shift:] + rows[:shift]:
                base = await _time_awaited(dict_lookup, keys) * 1e9
                ns = await _time_awaited(lookup, keys) * 1e9
                dict_times.append(base)
                times[name].append(ns)
                ratios[name].append(ns / base)
    finally:
        if gc_was:
            gc.enable()
    if layer.hits - hits != rounds * len(keys):
        raise AssertionError("LocalLayer.fresh missed: the rows did not all time hits")
    return [("dict.get, awaited", statistics.median(dict_times), 1.0)] + [
        (name, statistics.median(times[name]), statistics.median(ratios[name])) for name, _ in rows
    ]


def anatomy_table(n: int, rows: Sequence[tuple[str, float, float]]) -> Table:
    previous = rows[0][1]
    cells = []
    for name, ns, ratio in rows:
        cells.append((name, f"{ns:.0f} ns", f"{ns - previous:+.0f} ns", f"{ratio:.2f}x"))
        previous = ns
    return Table(
        "scale",
        f"a local hit at {_count_text(n)} entries, piece by piece",
        ("lookup", "median", "added", "/ dict"),
        tuple(cells),
        note=(
            "each row adds one piece of LocalLayer.fresh to the row above (see "
            "benchmarks/scale_local.py); median: of the row's passes; added: over the row "
            "above; / dict: the median of the ratios of each pass to the dict's pass just "
            "before it, as the target's"
        ),
    )


def _count_text(n: int) -> str:
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    return f"{n // 1000}k" if n % 1000 == 0 else f"{n:,}"


def run(*, smoke: bool = False, out: Callable[[str], None] = print) -> list[Finding]:
    sizes = SMOKE_SIZES if smoke else SIZES
    rounds = 3 if smoke else 9
    out(
        f"redicache_async local layer as it grows: hit and bytes per entry against entries, "
        f"next to a plain dict (TTL {TTL:g} s entries; median of {rounds} alternating rounds "
        f"of {LOOKUPS:,} random lookups) · Python {platform.python_version()}"
    )
    out("")
    out(f"{'':>8} {'awaited hit':^33} {'bare call':^23} {'bytes per entry':^19}")
    out(
        f"{'entries':>8} {'dict ns':>8} {'ours ns':>8} {'ratio':>7}  {'target':<7}"
        f" {'get ns':>7} {'fresh ns':>8} {'ratio':>6} {'dict':>9} {'ours':>9}"
    )
    results: list[Finding] = []
    for n in sizes:
        hit, bare = asyncio.run(hit_latency(n, rounds))
        ratio = hit.ratio
        gc.collect()
        sources = _payloads(n)
        dict_bytes = held_bytes(build_dict, sources) / n
        ours_bytes = held_bytes(build_layer, sources) / n
        del sources
        bound = TARGET if n in TARGET_SIZES else None
        target = ("met" if ratio <= TARGET else "NOT met") if bound else ""
        out(
            f"{_count_text(n):>8} {hit.dict_ns:>8.0f} {hit.ours_ns:>8.0f} {ratio:>6.2f}x  "
            f"{target:<7} {bare.dict_ns:>7.0f} {bare.ours_ns:>8.0f} {bare.ratio:>5.2f}x"
            f" {dict_bytes:>9.1f} {ours_bytes:>9.1f}"
        )
        count = _count_text(n)
        results.append(
            Result(
                part="scale",
                name=f"local hit / awaited dict lookup ({count} entries)",
                figure=ratio,
                unit="x",
                bound=bound,
                detail=(
                    f"ours {hit.ours_ns:.0f} ns, dict {hit.dict_ns:.0f} ns (medians); bare "
                    f"LocalLayer.fresh {bare.ours_ns:.0f} ns, dict.get {bare.dict_ns:.0f} ns"
                ),
            )
        )
        results.append(
            Result(
                part="scale",
                name=f"local layer bytes per entry ({count} entries)",
                figure=round(ours_bytes, 1),
                unit="B/entry",
                bound=None,
                detail=f"plain dict {dict_bytes:.0f} B/entry",
            )
        )
        gc.collect()
    out("")
    out(f"target: awaited hit <= {TARGET:g}x the awaited dict lookup at 100k and 1M entries.")
    out("ns: one lookup in a loop over random keys (awaited: an `async def` around it, as the")
    out("hot-path part's dict baseline; bare: dict.get against LocalLayer.fresh);")
    out("B/e: bytes still allocated per entry once built, keys and values included.")
    size = SMOKE_ANATOMY_SIZE if smoke else ANATOMY_SIZE
    table = anatomy_table(size, asyncio.run(hit_anatomy(size, rounds)))
    out("")
    out(f"{table.title} (median ns; each row adds one piece to the row above):")
    for row in table.rows:
        out(f"  {row[0]:<44} {row[1]:>8} {row[2]:>8} {row[3]:>7}")
    results.append(table)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.scale_local",
        description="Local hit latency and bytes per entry against entries, next to a dict.",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="1k and 10k entries, 3 rounds (seconds; CI)"
    )
    args = parser.parse_args(argv)
    run(smoke=args.smoke)
    return 0


if __name__ == "__main__":
    sys.exit(main())
