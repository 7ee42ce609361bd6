"""Result tables and plots of the sweeping recipes: CSV, markdown and PNG (matplotlib, no display needed), each
written atomically."""
from __future__ import annotations

import csv
import io
import math
import os
import statistics
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from clinical_prompt.atomic import write_bytes, write_text

Row = Mapping[str, Any]


def write_csv(path: str | os.PathLike, rows: Sequence[Row], columns: Sequence[str]) -> None:
    """``rows`` as CSV with a header of ``columns`` (missing values empty)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.3f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def markdown_table(rows: Sequence[Row], columns: Sequence[str], headers: Mapping[str, str] | None = None) -> str:
    """A GitHub markdown table of ``rows`` (floats with three decimals, integers with thousands separators)."""
    headers = headers or {}
    lines = ["| " + " | ".join(headers.get(c, c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def mean_and_spread(rows: Sequence[Row], keys: Sequence[str], values: Sequence[str]) -> list[dict[str, Any]]:
    """One row per distinct ``keys`` (in first-seen order): ``runs``, and for each of ``values`` its mean
    (``{value}``) and sample standard deviation (``{value}_sd``, 0 for one run) over the rows; ``None`` where
    no row has the value (not scored)."""
    groups: dict[tuple, list[Row]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    summary = []
    for group_key, members in groups.items():
        out: dict[str, Any] = dict(zip(keys, group_key)) | {"runs": len(members)}
        for value in values:
            numbers = [float(m[value]) for m in members if m[value] is not None]
            out[value] = statistics.fmean(numbers) if numbers else None
            out[f"{value}_sd"] = (statistics.stdev(numbers) if len(numbers) > 1 else 0.0) if numbers else None
        summary.append(out)
    return summary


def with_spread(rows: Sequence[Row], values: Sequence[str]) -> list[dict[str, Any]]:
    """Rows of :func:`mean_and_spread` with each value as the text ``mean ± sd`` (for markdown)."""
    return [{**row, **{v: None if row[v] is None else f"{row[v]:.3f} ± {row[f'{v}_sd']:.3f}" for v in values}}
            for row in rows]


def save_figure(path: str | os.PathLike, draw: Callable[[Any], None], *, size: tuple[float, float] = (7, 4.5)) -> None:
    """Render ``draw(axes)`` into a PNG at ``path`` (the Agg backend: no display needed)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, layout="constrained")
    draw(figure.add_subplot())
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    write_bytes(path, buffer.getvalue())


def line_plot(path: str | os.PathLike, series: Mapping[str, Sequence[tuple[float, float, float]]], *,
              xlabel: str, ylabel: str, title: str, log_x: bool = False) -> None:
    """Lines of ``(x, mean, sd)`` points, one per series name, each with a band of ± sd."""
    def draw(axes: Any) -> None:
        for name, points in series.items():
            xs, means, sds = zip(*sorted(points))
            axes.plot(xs, means, marker="o", label=name)
            axes.fill_between(xs, [m - s for m, s in zip(means, sds)], [m + s for m, s in zip(means, sds)], alpha=0.2)
        if log_x:
            axes.set_xscale("log")
            ticks = sorted({x for points in series.values() for x, _, _ in points})
            axes.set_xticks(ticks, [f"{x:g}" for x in ticks])
            axes.minorticks_off()
        axes.set(xlabel=xlabel, ylabel=ylabel, title=title)
        axes.grid(alpha=0.3)
        axes.legend()

    save_figure(path, draw)


def bar_plot(path: str | os.PathLike, groups: Sequence[str], bars: Mapping[str, Sequence[float]], *,
             ylabel: str, title: str, hatched: Collection[str] = ()) -> None:
    """Grouped bars: for each name in ``bars`` one bar per group (its values in ``groups`` order; NaN draws none),
    the bars of the names in ``hatched`` hatched (e.g. the reference methods)."""
    def draw(axes: Any) -> None:
        width = 0.8 / max(len(bars), 1)
        for i, (name, values) in enumerate(bars.items()):
            positions = [g + (i - (len(bars) - 1) / 2) * width for g in range(len(groups))]
            axes.bar(positions, values, width, label=name, hatch="//" if name in hatched else None,
                     edgecolor="white" if name in hatched else None)
        axes.set_xticks(range(len(groups)), groups, rotation=20, ha="right")
        axes.set(ylabel=ylabel, title=title)
        axes.grid(axis="y", alpha=0.3)
        axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside the bars, never on them

    save_figure(path, draw, size=(max(7, 1.2 * len(groups)) + 2, 4.5))


def scatter_plot(path: str | os.PathLike, series: Mapping[str, Sequence[tuple[float, float, str]]], *,
                 xlabel: str, ylabel: str, title: str) -> None:
    """Labelled points ``(x, y, label)`` on a logarithmic x axis, one marker colour per series name."""
    def draw(axes: Any) -> None:
        for name, points in series.items():
            axes.scatter([p[0] for p in points], [p[1] for p in points], label=name)
            for x, y, label in points:
                axes.annotate(label, (x, y), textcoords="offset points", xytext=(4, 3), fontsize="x-small")
        axes.set_xscale("log")
        axes.set(xlabel=xlabel, ylabel=ylabel, title=title)
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")

    save_figure(path, draw)
