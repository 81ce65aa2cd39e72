"""What each benchmark part hands back for the report (``RESULTS.md`` and the chart): one
:class:`Result` per target of the performance issue, measured side by side in one run; and,
where one figure cannot tell it, a :class:`Table` (a part's figures, side by side) or a
:class:`Curve` (a figure against a load: entries, event rate, processes)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, TypeAlias

__all__ = ["Compare", "Curve", "Finding", "Result", "Series", "Table", "show", "split"]

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


@dataclass(frozen=True)
class Table:
    """A part's figures side by side (e.g. one row per library), shown in ``RESULTS.md``
    under the part's name; ``note`` says how to read it."""

    part: str
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    note: str = ""


@dataclass(frozen=True)
class Series:
    """One line of a :class:`Curve`: ``(x, y)`` points in the order of ``x``."""

    label: str
    points: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Curve:
    """A figure against a load (readers, entries, event rate), one line per :class:`Series`;
    shown in ``RESULTS.md`` as a table and drawn in the chart beside the targets."""

    part: str
    title: str
    x_label: str
    y_label: str
    series: tuple[Series, ...]
    log_x: bool = False
    log_y: bool = False
    note: str = ""


Finding: TypeAlias = Result | Table | Curve
"""Anything a part hands back to the report."""


def split(findings: Iterable[Finding]) -> tuple[list[Result], list[Table], list[Curve]]:
    """``findings`` sorted by kind, each kind in the order given."""
    results: list[Result] = []
    tables: list[Table] = []
    curves: list[Curve] = []
    for finding in findings:
        if isinstance(finding, Result):
            results.append(finding)
        elif isinstance(finding, Table):
            tables.append(finding)
        else:
            curves.append(finding)
    return results, tables, curves


def show(title: str, found: Iterable[Finding], out: Callable[[str], None]) -> None:
    """Print a part's results and tables as it measured them (``out``: print, or a test's)."""
    out(title)
    for finding in found:
        if isinstance(finding, Table):
            out("  " + " | ".join(finding.columns))
            for row in finding.rows:
                out("  " + " | ".join(row))
            out("  " + finding.note)
        elif isinstance(finding, Result):
            out(finding.verdict)
