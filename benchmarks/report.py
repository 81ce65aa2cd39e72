"""The benchmark report: ``RESULTS.md`` (the environment, one table of every result against
its target, then the parts' own tables and curves) and ``results.png`` (a chart of how far
inside or outside its target each figure is, with the curves drawn beneath it).

``python -m benchmarks.report --demo DIR`` writes a report of made-up results into ``DIR``, to
look at the layout without measuring anything.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import math
import os
import platform
import sys
import textwrap
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from redis.utils import HIREDIS_AVAILABLE

from .results import Curve, Result, Series, Table

__all__ = ["environment", "main", "write_report"]

TITLE = "redicache_async benchmark results"

METHOD = (
    "Every part runs our code and its baselines or peers interleaved, round by round, in one "
    "process, against the project's own server (started for the run, for the parts that need "
    "one); each figure is a median over the rounds, and each ratio is the median of the "
    "per-round ratios. The machines are shared and noisy, so only ratios measured side by side "
    "mean anything: absolute timings vary from run to run and from machine to machine. No "
    "timing is asserted anywhere; the table says whether each target was met in this run."
)

_MET = {True: "✅ met", False: "❌ NOT met", None: "—"}
_GREEN = "#2e7d32"
_RED = "#c62828"


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                name, _, value = line.partition(":")
                if name.strip() in ("model name", "Model", "Hardware") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def environment(server_info: Mapping[str, str]) -> dict[str, str]:
    """The machine and the versions the figures were measured with, for the report; the
    entries of ``server_info`` (e.g. ``{"server": "valkey 8.1.8"}``) come last."""
    parser = f"hiredis {_version('hiredis')}" if HIREDIS_AVAILABLE else "Python"
    ours = _version("redicache-async")
    env = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "os": platform.platform(),
        "cpu": _cpu_model(),
        "cpu count": str(os.cpu_count() or "unknown"),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "redis-py": f"{redis.__version__} ({parser} parser)",
        "aiocache": _version("aiocache"),
        "cashews": _version("cashews"),
        "uvloop": _version("uvloop"),
        "uvicorn / fastapi": f"{_version('uvicorn')} / {_version('fastapi')}",
        "redicache_async": "dev" if ours == "not installed" else ours,
    }
    env.update(server_info)
    return env


def _cell(text: str) -> str:
    """``text`` made safe for a markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def _markdown(
    results: Sequence[Result],
    env: Mapping[str, str],
    command: str,
    title: str,
    chart: str,
    tables: Sequence[Table] = (),
    curves: Sequence[Curve] = (),
) -> str:
    lines = [f"# {title}", "", METHOD, "", "Produced by:", "", "```", command, "```", ""]
    lines += ["## Environment", "", "| item | value |", "|---|---|"]
    lines += [_row([key, value]) for key, value in env.items()]
    lines += ["", "## Results", ""]
    lines += [_row(["part", "what", "figure", "target", "met", "detail"]), "|---" * 6 + "|"]
    lines += [
        _row([r.part, r.name, r.figure_text, r.target_text or "—", _MET[r.met], r.detail])
        for r in results
    ]
    if tables:
        lines += ["", "## Details"]
        for table in tables:
            lines += ["", f"### {table.part}: {table.title}", ""]
            lines += [_row(table.columns), "|---" * len(table.columns) + "|"]
            lines += [_row(row) for row in table.rows]
            if table.note:
                lines += ["", table.note]
    if curves:
        lines += ["", "## Curves", "", "Drawn in the chart, beneath the targets."]
        for curve in curves:
            lines += _curve_markdown(curve)
    lines += ["", f"Chart: ![ratios]({chart})", ""]
    return "\n".join(lines)


def _number(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _curve_markdown(curve: Curve) -> list[str]:
    """The curve as a table: a row per x, a column per series ("—" where a series has no
    point at that x)."""
    xs = sorted({x for series in curve.series for x, _ in series.points})
    points = [dict(series.points) for series in curve.series]
    header = [curve.x_label, *(f"{s.label} ({curve.y_label})" for s in curve.series)]
    lines = ["", f"### {curve.part}: {curve.title}", ""]
    lines += [_row(header), "|---" * len(header) + "|"]
    for x in xs:
        cells = [_number(p[x]) if x in p else "—" for p in points]
        lines.append(_row([_number(x), *cells]))
    if curve.note:
        lines += ["", curve.note]
    return lines


def _log_ticks(low: float, high: float) -> list[float]:
    """Round tick values between ``low`` and ``high``: finer steps for a narrower range, so
    that there are a few ticks and their labels never overlap."""
    decades = math.log10(high / low)
    if decades <= 1.2:
        steps: tuple[float, ...] = (1, 1.5, 2, 3, 5, 7)
    elif decades <= 2.5:
        steps = (1, 2, 5)
    else:
        steps = (1,)
    first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
    ticks = [round(step * 10.0**power, 6) for power in range(first, last + 1) for step in steps]
    return [tick for tick in ticks if low <= tick <= high]


#: Height (inches) of one row of curves beneath the targets' bars, two curves a row.
_CURVE_ROW_HEIGHT = 3.4


def _chart(
    results: Sequence[Result], path: Path, *, title: str, curves: Sequence[Curve] = ()
) -> None:
    """A bar per result with a target: its headroom on a log scale, where 1 is the target;
    beneath it, the curves, two a row."""
    try:
        import matplotlib
    except ImportError as exc:
        raise RuntimeError("the report's chart needs matplotlib: pip install matplotlib") from exc
    # A file, never a window: the report is written on servers and in CI.
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # A figure with no finite headroom (a baseline that did nothing: 0 events/s) has no bar:
    # the table says what it is.
    rows = [(r, h) for r in results if (h := r.headroom) is not None and h > 0 and math.isfinite(h)]
    bars_height = 1.6 + 0.5 * max(len(rows), 1)
    curve_rows = (len(curves) + 1) // 2
    fig = plt.figure(figsize=(10, bars_height + _CURVE_ROW_HEIGHT * curve_rows))
    try:
        grid = fig.add_gridspec(
            1 + curve_rows, 2, height_ratios=[bars_height] + [_CURVE_ROW_HEIGHT] * curve_rows
        )
        _headroom_bars(fig.add_subplot(grid[0, :]), rows, title=title)
        for number, curve in enumerate(curves):
            _draw_curve(fig.add_subplot(grid[1 + number // 2, number % 2]), curve)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)


def _draw_curve(ax: Any, curve: Curve) -> None:
    for series in curve.series:
        xs = [x for x, _ in series.points]
        ys = [y for _, y in series.points]
        ax.plot(xs, ys, marker="o", markersize=3.5, linewidth=1.4, label=series.label)
    xs = sorted({x for series in curve.series for x, _ in series.points})
    if curve.log_x:
        ax.set_xscale("log")
    elif xs and all(x == int(x) for x in xs) and len(xs) <= 12:
        ax.set_xticks(xs)  # counts (processes, readers): no tick between two of them
    if curve.log_y:
        ax.set_yscale("log")
    elif not any(y < 0 for s in curve.series for _, y in s.points):
        ax.set_ylim(bottom=0)
    ax.set_title(textwrap.fill(f"{curve.part}: {curve.title}", 52), fontsize=9)
    ax.set_xlabel(curve.x_label, fontsize=8.5)
    ax.set_ylabel(textwrap.fill(curve.y_label, 34), fontsize=8.5)
    ax.tick_params(labelsize=8)
    ax.grid(color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    if len(curve.series) > 1:
        ax.legend(fontsize=7.5)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _headroom_bars(ax: Any, rows: Sequence[tuple[Result, float]], *, title: str) -> None:
    """A bar per result: its headroom on a log scale, growing from the target line at 1."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    ax.set_title(title, fontsize=11)
    if not rows:
        ax.text(0.5, 0.5, "no result has a target", ha="center", va="center")
        ax.set_axis_off()
    else:
        headrooms = [h for _, h in rows]
        colors = [_GREEN if r.met else _RED for r, _ in rows]
        y = list(range(len(rows)))
        # Bars grow from the target line: right of it is met, left of it missed.
        ax.barh(y, [h - 1 for h in headrooms], left=1, color=colors, height=0.6)
        ax.axvline(1, color="black", linewidth=1)
        ax.set_xscale("log")
        # Room on both sides for the labels at the bars' ends: they are about a fifth of
        # the axis wide, whatever the bars' spread in decades.
        low, high = min(min(headrooms), 1.0), max(max(headrooms), 1.0)
        decades = max(math.log10(high / low), math.log10(2))
        pad = 10 ** (decades * 0.4)
        ax.set_xlim(low / pad, high * pad)
        for row, (result, headroom) in enumerate(rows):
            met = headroom >= 1
            ax.annotate(
                f"{result.figure_text} ({result.target_text})",
                (headroom, row),
                xytext=(4 if met else -4, 0),
                textcoords="offset points",
                ha="left" if met else "right",
                va="center",
                fontsize=8.5,
            )
        ax.text(
            1,
            -0.75,
            "target",
            ha="center",
            va="bottom",
            fontsize=8.5,
            bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": "none"},
        )
        ax.set_yticks(y)
        ax.set_yticklabels(
            [textwrap.fill(f"{r.part}: {r.name}", 48) for r, _ in rows], fontsize=8.5
        )
        ax.set_ylim(len(rows) - 0.4, -1.0)
        ax.xaxis.set_major_locator(FixedLocator(_log_ticks(low / pad, high * pad)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(
            "headroom: target / figure (at most), figure / target (at least); "
            "> 1: met, < 1: missed",
            fontsize=9,
        )
        ax.grid(axis="x", which="major", color="#dddddd", linewidth=0.6)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)


def write_report(
    results: Sequence[Result],
    directory: Path,
    *,
    env: Mapping[str, str],
    command: str,
    title: str = TITLE,
    tables: Sequence[Table] = (),
    curves: Sequence[Curve] = (),
) -> tuple[Path, Path]:
    """Write ``RESULTS.md`` and ``results.png`` into ``directory`` and return their paths.

    ``env`` is :func:`environment`'s answer; ``command`` is what produced the results;
    ``tables`` and ``curves`` follow the results' table (the curves are drawn in the chart
    too). Raises RuntimeError, before writing either file, when matplotlib is missing."""
    directory.mkdir(parents=True, exist_ok=True)
    markdown, png = directory / "RESULTS.md", directory / "results.png"
    when = env.get("date", "").replace("T", " ").replace("+00:00", " UTC")
    context = " · ".join(part for part in (when, env.get("server", "")) if part)
    heading = f"{title}\n{context}" if context else title
    # The chart first: if it cannot be drawn, no RESULTS.md points at a missing picture.
    _chart(results, png, title=heading, curves=curves)
    text = _markdown(results, env, command, title, png.name, tables, curves)
    markdown.write_text(text, encoding="utf-8")
    return markdown, png


def demo_results() -> list[Result]:
    """Made-up rows, one of each kind the table and the chart must show."""
    return [
        Result(
            "hot path",
            "local hit: get_or_init / awaited dict lookup",
            2.7,
            "x",
            4.0,
            detail="ours 430 ns, dict 160 ns (medians)",
        ),
        Result(
            "hot path",
            "Redis-backed read: get, local layer off / redis-py get",
            1.31,
            "x",
            1.2,
            detail="ours 61.0 µs, redis-py 46.6 µs (medians)",
        ),
        Result(
            "hot path",
            "local hit vs the fastest peer (cashews | aiocache)",
            7.9,
            "x",
            5.0,
            compare="at_least",
            detail="peer 3.4 µs, ours 430 ns",
        ),
        Result(
            "cold key",
            "fetches for 200 concurrent misses of one key",
            1,
            "fetches",
            1,
            compare="exactly",
        ),
        Result(
            "rebuild",
            "builder rebuild of 100k items, readers served throughout",
            3.4,
            "x",
            10.0,
            detail="rebuild 1.9 s, plain pipeline 560 ms",
        ),
        Result(
            "memory",
            "local layer bytes per entry / plain dict (100k small entries, no TTL)",
            1.29,
            "x",
            1.5,
            detail="ours 656 B/entry, dict 507 B/entry",
        ),
        Result(
            "memory",
            "local layer bytes per entry (100k small entries)",
            656.0,
            "B/entry",
            None,
            detail="no TTL",
        ),
    ]


def demo_tables() -> list[Table]:
    return [
        Table(
            "end to end",
            "per library",
            ("library", "fetches per expiry", "Redis commands / request"),
            (("redicache_async", "1", "0.02"), ("cashews @cache(lock=True)", "1", "1.45")),
            note="made up",
        )
    ]


def demo_curves() -> list[Curve]:
    readers = (1.0, 2.0, 4.0, 8.0)
    return [
        Curve(
            "readers",
            "Redis CPU against readers",
            "reader processes",
            "Redis CPU, % of a core",
            (
                Series("local layer on", tuple((x, 0.4) for x in readers)),
                Series("local layer off", tuple((x, 6.0 * x) for x in readers)),
            ),
        ),
        Curve(
            "scale",
            "local hit against entries",
            "entries",
            "ns per hit",
            (Series("ours", ((1e3, 400.0), (1e5, 1700.0), (1e6, 2100.0))),),
            log_x=True,
        ),
    ]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.report",
        description="Write a report of made-up results, to look at the layout.",
    )
    parser.add_argument(
        "--demo", type=Path, required=True, metavar="DIR", help="the directory to write into"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    env = environment({"server": "valkey 8.1.8 (made up)"})
    try:
        paths = write_report(
            demo_results(),
            args.demo,
            env=env,
            command=f"python -m benchmarks.report --demo {args.demo}",
            title="redicache_async benchmark results: layout demo, not measurements",
            tables=demo_tables(),
            curves=demo_curves(),
        )
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
