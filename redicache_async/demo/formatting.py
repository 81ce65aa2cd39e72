"""How the demo's reports write counts and spreads of timings, the same way in both parts."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

__all__ = ["plural", "spread"]


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
