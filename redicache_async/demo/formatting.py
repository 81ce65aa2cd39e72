"""How the demo's reports write counts and spreads of timings, the same way in both parts."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

__all__ = ["plural", "spread", "verdict"]


def plural(count: int, one: str, many: str) -> str:
    """``"1 build"``, ``"3 builds"``."""
    return f"{count} {one if count == 1 else many}"


def spread(values_ms: Sequence[float]) -> str:
    """Min, median and max of ``values_ms`` (milliseconds), or ``"n/a"`` when there are none."""
    if not values_ms:
        return "n/a"
    return (
        f"min {min(values_ms):.1f} ms · median {statistics.median(values_ms):.1f} ms · "
        f"max {max(values_ms):.1f} ms"
    )


def verdict(
    out: Callable[[str], None], problems: Sequence[str], begun: float, part: str, success: str
) -> int:
    """End a part's report: ``FAILED`` with its problems (exit code 1), or ``OK`` with
    ``success`` (0); either way with how long the part took since ``begun`` (monotonic)."""
    out("")
    took = time.monotonic() - begun
    if problems:
        out(f"FAILED: {'; '.join(problems)} ({part} took {took:.1f} s)")
        return 1
    out(f"OK: {success} (took {took:.1f} s)")
    return 0
