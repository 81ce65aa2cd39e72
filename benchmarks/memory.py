"""What the local layer costs in memory, next to a plain dict holding the same values.

Target: the bytes per entry of :class:`~redicache_async.local.LocalLayer` holding 100,000 small
entries are reported, and are at most 1.5x those of a plain ``dict`` holding the same values.

Each structure is filled the way it really would be, from one list of ``(key, payload,
version)`` bytes prepared beforehand (the payload is the compact JSON the cache stores): while it
is filled, it makes each key string anew and decodes each value with ``json.loads``, so that it
owns its keys and values, as a cache that received them from callers and from Redis does. The
local layer is filled through ``put``, as the client's ``_remember`` fills it: a distinct
microsecond version per entry (parsed from its digits, as from a reply), the payload's length
as the size, and either no TTL (``expires_at = inf``) or one of 60 seconds (a ``monotonic()``
deadline: per-entry floats cost memory too).

The bytes a structure holds are what ``tracemalloc`` counts as still allocated after it has been
built and ``gc.collect()`` has run, less what it counted before. Each structure is measured on
its own (build, measure, delete, collect), three times, and the median is reported. tracemalloc
counts the bytes requested, not the allocator's rounding (a 24-byte float takes a 32-byte
block): the figures are slightly low for every structure alike. A breakdown then measures the
steps from the dict to the local layer one at a time, to show where the extra bytes go.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import platform
import statistics
import sys
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from time import monotonic
from typing import Any

from redicache_async import JsonSerializer
from redicache_async.local import LocalEntry, LocalLayer

from .results import Result

__all__ = ["main", "run"]

#: A version as the client stores it: a microsecond timestamp (each entry adds its index).
BASE_VERSION = 1_763_900_000_123_456
TTL = 60.0
#: CPython shares the int objects from -5 to 256: a size below this costs no object of its own.
SMALL_INT_LIMIT = 257
#: The target: at most this many times the bytes per entry of a plain dict.
TARGET = 1.5

Source = tuple[bytes, bytes, bytes]
"""A key's UTF-8 bytes, the value's JSON payload and its version's digits, as a reply has them."""
Build = Callable[[Sequence[Source]], object]


def make_sources(n: int) -> list[Source]:
    """The keys, payloads and versions every structure is filled from, prepared before any
    measurement."""
    dumps = JsonSerializer().dumps
    return [
        (
            f"user:{i}".encode(),
            dumps({"id": i, "name": f"user-{i}", "active": True}),
            str(BASE_VERSION + i).encode(),
        )
        for i in range(n)
    ]


# Each builder decodes the key bytes (a new str each time) and the payload inside its own loop,
# so that the structure it returns is the only owner of its keys and values. The version is
# parsed from its digits as the client's `int(reply[...])` does: an int made by arithmetic
# (`BASE_VERSION + i`) would take 4 bytes more, as CPython allocates a digit for the carry.


def build_dict(sources: Sequence[Source]) -> object:
    data: dict[str, Any] = {}
    for key, payload, _ in sources:
        data[key.decode()] = json.loads(payload)
    return data


def build_layer(sources: Sequence[Source]) -> object:
    layer = LocalLayer(max_entries=len(sources), max_bytes=1 << 40)
    for key, payload, version in sources:
        layer.put(
            key.decode(),
            json.loads(payload),
            version=int(version),
            size=len(payload),
            expires_at=math.inf,
            stale_ttl=0.0,
        )
    return layer


def build_layer_ttl(sources: Sequence[Source]) -> object:
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


# The breakdown: each step adds one thing on the way from the dict to the local layer.


def build_entries(sources: Sequence[Source]) -> object:
    """A dict of entries that all share one version and one size object."""
    data: dict[str, LocalEntry] = {}
    for key, payload, _ in sources:
        text = key.decode()
        data[text] = LocalEntry(json.loads(payload), BASE_VERSION, 0, math.inf, math.inf, text)
    return data


def build_versioned(sources: Sequence[Source]) -> object:
    data: dict[str, LocalEntry] = {}
    for key, payload, version in sources:
        text = key.decode()
        data[text] = LocalEntry(json.loads(payload), int(version), 0, math.inf, math.inf, text)
    return data


def build_sized(sources: Sequence[Source]) -> object:
    data: dict[str, LocalEntry] = {}
    for key, payload, version in sources:
        text = key.decode()
        data[text] = LocalEntry(
            json.loads(payload), int(version), len(payload), math.inf, math.inf, text
        )
    return data


@dataclass
class Structure:
    name: str
    build: Build
    samples: list[int]
    """Bytes held, one per repeat."""

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


def held_bytes(build: Build, sources: Sequence[Source]) -> int:
    """The bytes the structure that ``build`` makes still holds once it is built."""
    gc.collect()
    before, _ = tracemalloc.get_traced_memory()
    structure = build(sources)
    gc.collect()
    after, _ = tracemalloc.get_traced_memory()
    del structure
    gc.collect()
    return after - before


def measure(structures: Sequence[Structure], sources: Sequence[Source], repeats: int) -> None:
    """Measure every structure once per repeat, one at a time, under one tracemalloc session."""
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        for _ in range(repeats):
            for structure in structures:
                structure.samples.append(held_bytes(structure.build, sources))
    finally:
        if started:
            tracemalloc.stop()


def per_repeat_ratio(subject: Structure, baseline: Structure) -> float:
    return statistics.median(a / b for a, b in zip(subject.samples, baseline.samples, strict=True))


def _count_text(n: int) -> str:
    return f"{n // 1000}k" if n % 1000 == 0 else f"{n:,}"


def run(*, smoke: bool = False, out: Callable[[str], None] = print) -> list[Result]:
    """Measure, print the figures and the breakdown, and return the results for the report."""
    n = 10_000 if smoke else 100_000
    repeats = 1 if smoke else 3
    sources = make_sources(n)

    plain = Structure("plain dict {key: value}", build_dict, [])
    ours = Structure("LocalLayer, no TTL", build_layer, [])
    ours_ttl = Structure(f"LocalLayer, TTL {TTL:g} s", build_layer_ttl, [])
    entries = Structure("dict {key: LocalEntry}, shared ints", build_entries, [])
    versioned = Structure("... + a version int per entry", build_versioned, [])
    sized = Structure("... + the payload length as size", build_sized, [])
    measure([plain, ours, ours_ttl, entries, versioned, sized], sources, repeats)

    def per_entry(structure: Structure) -> float:
        return structure.median / n

    count = _count_text(n)
    payload_sizes = [len(payload) for _, payload, _ in sources]
    width = 46
    out(
        f"redicache_async local layer memory: {n:,} small entries, median of {repeats} "
        f"measurement{'s' if repeats > 1 else ''} (tracemalloc)"
    )
    out(
        f"payloads {min(payload_sizes)}-{max(payload_sizes)} B of JSON, e.g. "
        f"{sources[-1][1].decode()} · Python {platform.python_version()}"
    )
    out("")
    out(f"{'':<{width}} {'B/entry':>9} {'over dict':>10} {'ratio':>7}  target")
    base = per_entry(plain)
    out(f"  {plain.name + ' (baseline)':<{width - 2}} {base:>9.1f} {'':>10} {'1.00x':>7}")
    results: list[Result] = []
    for structure, label in ((ours, "no TTL"), (ours_ttl, "with TTL")):
        ratio = per_repeat_ratio(structure, plain)
        ours_b = per_entry(structure)
        verdict = "met" if ratio <= TARGET else "NOT met"
        out(
            f"  {structure.name:<{width - 2}} {ours_b:>9.1f} {ours_b - base:>+10.1f} "
            f"{ratio:>6.2f}x  <= {TARGET:g}x ({verdict})"
        )
        results.append(
            Result(
                part="memory",
                name=f"local layer bytes per entry / plain dict ({count} small entries, {label})",
                figure=ratio,
                unit="x",
                bound=TARGET,
                compare="at_most",
                detail=f"ours {ours_b:.0f} B/entry, dict {base:.0f} B/entry",
            )
        )
    results.append(
        Result(
            part="memory",
            name=f"local layer bytes per entry ({count} small entries)",
            figure=round(per_entry(ours), 1),
            unit="B/entry",
            bound=None,
            detail=(
                f"no TTL; {per_entry(ours_ttl):.0f} B/entry with a TTL; "
                f"{base:.0f} B/entry in a plain dict"
            ),
        )
    )

    out("")
    out("where the extra bytes per entry go (each step adds one thing to the one before):")
    big_sizes = sum(size >= SMALL_INT_LIMIT for size in payload_sizes)
    steps: list[tuple[str, float, str]] = [
        (
            "a LocalEntry per entry",
            per_entry(entries) - base,
            f"a float (its deadline) with 6 slots; sys.getsizeof "
            f"{sys.getsizeof(LocalEntry(None, 0, 0, 0.0, 0.0))} B",
        ),
        (
            "the version int",
            per_entry(versioned) - per_entry(entries),
            f"a microsecond timestamp; sys.getsizeof {sys.getsizeof(BASE_VERSION + 1)} B",
        ),
        (
            "the size int",
            per_entry(sized) - per_entry(versioned),
            f"{big_sizes:,} of {n:,} payloads >= {SMALL_INT_LIMIT} B; shorter ones' sizes are "
            "CPython's shared small ints",
        ),
        (
            "the eviction ring, and the rest of put",
            per_entry(ours) - per_entry(sized),
            "a deque slot per entry (8 B): the steps above are the whole layer",
        ),
        (
            "a TTL: the stale_until float",
            per_entry(ours_ttl) - per_entry(ours),
            f"1 float, sys.getsizeof {sys.getsizeof(monotonic())} B (the deadline is the entry)",
        ),
    ]
    for label, extra, why in steps:
        out(f"  {label:<{width - 2}} {extra:>+9.1f}  {why}")
    out("")
    out("B/entry: bytes still allocated once the structure is built (keys and values included),")
    out("per entry; tracemalloc counts the bytes requested, without the allocator's rounding.")
    return results


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.memory",
        description="Memory of the local layer, next to a plain dict holding the same values.",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="10,000 entries, measured once (seconds; CI)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    run(smoke=args.smoke)
    return 0


if __name__ == "__main__":
    sys.exit(main())
