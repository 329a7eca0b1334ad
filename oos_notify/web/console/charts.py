"""Charts drawn on the server as SVG: a little arithmetic here, the shapes in ``_charts.html``.
No script and no style attribute, so they pass the console's content policy; each chart names
its values in its title for screen readers, and a table beside it gives the exact numbers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    text: str
    """The value as written beside the bar."""
    series: int
    """Which of the chart's series the bar belongs to (its colour and legend)."""


@dataclass(frozen=True)
class Group:
    label: str
    label_y: float
    bars: list[Bar]


@dataclass(frozen=True)
class HorizontalBars:
    """Groups of horizontal bars, each group's label above its bars: long center names fit a
    phone's width."""

    width: int
    height: int
    groups: list[Group]
    series: list[str]


BAR = 16
GAP = 6
LABEL = 20
LEFT = 4
TEXT_ROOM = 84
"""Room right of the longest bar for its value."""


def horizontal_bars(
    groups: Sequence[tuple[str, Sequence[tuple[float | None, str]]]],
    series: Sequence[str],
    width: int = 420,
) -> HorizontalBars:
    """``groups`` are (label, [(value, text) per series]); a None value draws no bar."""
    top = max((v for _, values in groups for v, _ in values if v is not None), default=0.0) or 1.0
    room = width - LEFT - TEXT_ROOM
    laid: list[Group] = []
    y = 0.0
    for label, values in groups:
        label_y = y + LABEL - 6
        y += LABEL
        bars = []
        for index, (value, text) in enumerate(values):
            length = 0.0 if value is None else max(room * value / top, 1.0)
            bars.append(Bar(LEFT, y, length, BAR, text, index))
            y += BAR + 2
        laid.append(Group(label, label_y, bars))
        y += GAP
    return HorizontalBars(width, int(y) + 2, laid, list(series))


@dataclass(frozen=True)
class Column:
    label: str
    x: float
    y: float
    width: float
    height: float
    text: str
    empty: bool


@dataclass(frozen=True)
class Columns:
    """Vertical bars on a 0-100 % scale, one per month."""

    width: int
    height: int
    baseline: float
    columns: list[Column]
    gridlines: list[tuple[float, str]]


def percent_columns(
    points: Sequence[tuple[str, float | None]], width: int = 420, height: int = 214
) -> Columns:
    """``points`` are (label, share between 0 and 1, or None for no data); a label's words are
    stacked under its column (``Nov 2026``: month above year), so twelve months fit."""
    left, top_room, bottom_room = 44, 18, 36
    baseline = height - bottom_room
    usable = baseline - top_room
    slot = (width - left) / max(len(points), 1)
    columns = []
    for index, (label, share) in enumerate(points):
        h = 0.0 if share is None else usable * share
        columns.append(
            Column(
                label,
                left + index * slot + slot * 0.15,
                baseline - h,
                slot * 0.7,
                h,
                "no data" if share is None else f"{round(100 * share)}%",
                share is None,
            )
        )
    grid = [(baseline - usable * f, f"{round(100 * f)}%") for f in (0.0, 0.5, 1.0)]
    return Columns(width, height, baseline, columns, grid)
