"""The HTML report's bar charts as geometry: where each bar, gridline, legend key and label
goes. The ``bar_chart`` macro in ``templates/macros.html.j2`` draws it as inline SVG, so
the report stays one file that loads nothing and runs no script.

Coordinates are rounded to a tenth of a pixel here, so the SVG stays small.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bot.review.formats import short

COLORS = {"answered": "#2e6fd8", "abstained": "#a3acb9", "up": "#12a150", "down": "#d92d20"}
P50, P95, USD = "#2e6fd8", "#f79009", "#7a5af8"
WIDTH, HEIGHT = 640, 240
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 36, 36
# At most this many labels under the bars: past it, every second (third, ...) one.
MAX_LABELS = 14

Series = tuple[str, list[float], str]  # name, one value per label, colour


@dataclass(frozen=True)
class Key:
    """A legend entry, its swatch at ``x``."""

    x: int
    name: str
    color: str


@dataclass(frozen=True)
class Gridline:
    y: float
    label: str


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    color: str
    title: str  # shown on hover


@dataclass(frozen=True)
class Slot:
    """One label's bars, and the label under them unless there is no room for it."""

    bars: list[Bar]
    label: str | None
    x: float


@dataclass(frozen=True)
class Chart:
    title: str
    legend: list[Key]
    grid: list[Gridline]
    slots: list[Slot]
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right: int = WIDTH - RIGHT
    label_y: int = HEIGHT - BOTTOM + 16


def bar_chart(
    title: str,
    labels: list[str],
    series: list[Series],
    *,
    stacked: bool = True,
    value_format: Callable[[float], str] | None = None,
) -> Chart:
    """A bar chart with a legend and hover titles: stacked, or grouped side by side."""
    fmt = value_format or short
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    if stacked:
        peaks = [sum(s[1][i] for s in series) for i in range(len(labels))]
    else:
        peaks = [max(s[1][i] for s in series) for i in range(len(labels))]
    ymax = _nice(max(peaks, default=0))
    band = plot_w / max(len(labels), 1)

    legend = []
    x = LEFT + plot_w
    for name, _values, color in reversed(series):
        x -= 8 + 7 * len(name) + 14  # about 7 pixels a character
        legend.append(Key(x, name, color))
    grid = [Gridline(_px(TOP + plot_h - frac * plot_h), fmt(ymax * frac)) for frac in (0, 0.5, 1)]
    every = max(1, -(-len(labels) // MAX_LABELS))
    slots = []
    for i, label in enumerate(labels):
        x0, inner = LEFT + i * band + band * 0.15, band * 0.7
        base = TOP + plot_h
        bars = []
        for j, (name, values, color) in enumerate(series):
            v = values[i]
            h = plot_h * v / ymax
            if stacked:
                bx, bw, by = x0, inner, base - h
                base -= h
            else:
                bw = inner / len(series)
                bx, by = x0 + j * bw, TOP + plot_h - h
            bars.append(Bar(_px(bx), _px(by), _px(bw), _px(h), color, f"{label}: {fmt(v)} {name}"))
        shown = label if i % every == 0 else None
        slots.append(Slot(bars, shown, _px(LEFT + (i + 0.5) * band)))
    return Chart(title, legend, grid, slots)


def report_charts(report: dict[str, Any]) -> list[Chart]:
    """The report's four charts: questions, votes and cost per day, latency per stage."""
    days = report["by_day"]
    labels = [d["date"][5:] for d in days]
    stages = report["latency_ms"]["by_stage"]
    return [
        bar_chart(
            "Questions per day",
            labels,
            [
                ("answered", [d["answered"] for d in days], COLORS["answered"]),
                ("abstained", [d["abstained"] for d in days], COLORS["abstained"]),
            ],
        ),
        bar_chart(
            "👍 / 👎 per day",
            labels,
            [
                ("helpful", [d["up"] for d in days], COLORS["up"]),
                ("not helpful", [d["down"] for d in days], COLORS["down"]),
            ],
        ),
        bar_chart(
            "Latency per stage (ms)",
            list(stages),
            [
                ("p50", [v["p50"] or 0 for v in stages.values()], P50),
                ("p95", [v["p95"] or 0 for v in stages.values()], P95),
            ],
            stacked=False,
        ),
        bar_chart(
            "Cost per day (USD)",
            labels,
            [("USD", [d["cost_usd"] for d in days], USD)],
            value_format=lambda v: f"${v:.4f}",
        ),
    ]


def _px(v: float) -> float:
    return round(float(v), 1)


def _nice(v: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten at or above ``v`` (1 for nothing)."""
    if v <= 0:
        return 1.0
    step = 10.0 ** math.floor(math.log10(v))
    return next(m * step for m in (1, 2, 5, 10) if m * step >= v * (1 - 1e-9))
