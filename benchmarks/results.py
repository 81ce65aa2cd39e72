"""What each benchmark part hands back: one :class:`Result` per target of the performance
issue, measured side by side in one run, for the report (``RESULTS.md`` and the chart)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Compare", "Result"]

Compare = Literal["at_most", "at_least", "exactly"]


@dataclass(frozen=True)
class Result:
    """One figure and the target it is held to.

    ``figure`` is a ratio (``unit`` "x") or an absolute figure ("ms", "fetches", ...), phrased
    the way the target is: "at most 4x an awaited dict" has ``figure`` = ours / dict,
    ``bound`` = 4, ``compare`` = "at_most"; "at least 5x faster than the fastest peer" has
    ``figure`` = peer / ours, ``bound`` = 5, ``compare`` = "at_least".
    """

    part: str
    """The benchmark part that measured it ("hot path", "cold key", ...)."""
    name: str
    """What the figure is, e.g. "local hit: get_or_init / awaited dict lookup"."""
    figure: float
    unit: str
    bound: float | None
    compare: Compare = "at_most"
    detail: str = ""
    """The measurements behind the figure, e.g. "ours 410 ns, dict 160 ns (medians)"."""

    @property
    def met(self) -> bool | None:
        """Whether the target is met; None when the figure has no target."""
        if self.bound is None:
            return None
        if self.compare == "at_most":
            return self.figure <= self.bound
        if self.compare == "at_least":
            return self.figure >= self.bound
        return self.figure == self.bound

    @property
    def headroom(self) -> float | None:
        """How far inside its target the figure is (1: on the bound, above 1: met with room,
        below 1: missed), for the chart; None without a target or for "exactly" targets."""
        if self.bound is None or self.compare == "exactly" or self.figure <= 0:
            return None
        if self.compare == "at_most":
            return self.bound / self.figure
        return self.figure / self.bound

    @property
    def target_text(self) -> str:
        if self.bound is None:
            return ""
        sign = {"at_most": "≤", "at_least": "≥", "exactly": "="}[self.compare]
        return f"{sign} {format_figure(self.bound, self.unit)}"

    @property
    def figure_text(self) -> str:
        return format_figure(self.figure, self.unit)

    @property
    def verdict(self) -> str:
        """``name: figure (target ≤ bound: met)``, the line a part prints for it."""
        met = {True: "met", False: "NOT met", None: "no target"}[self.met]
        target = f"target {self.target_text}: {met}" if self.bound is not None else met
        return f"{self.name}: {self.figure_text} ({target})"


def format_figure(value: float, unit: str) -> str:
    if unit == "x":
        return f"{value:.2f}x"
    if value == int(value):
        return f"{int(value):,} {unit}"
    return f"{value:,.1f} {unit}"
