"""A measured figure, its goal, and how both are printed."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    "<": operator.lt,
    ">=": operator.ge,
}


@dataclass(frozen=True)
class Goal:
    """``value <op> bound``, e.g. ``<= 1.3``."""

    op: str
    bound: float

    def __post_init__(self) -> None:
        if self.op not in _COMPARE:
            raise ValueError(f"goal operator must be one of {sorted(_COMPARE)}, got {self.op!r}")

    def met(self, value: float) -> bool:
        return not math.isnan(value) and _COMPARE[self.op](value, self.bound)

    def __str__(self) -> str:
        return f"{self.op} {self.bound:g}"


@dataclass(frozen=True)
class Figure:
    """One number of a benchmark run.  Figures without a goal are context for the others."""

    name: str
    value: float
    goal: Goal | None = None
    note: str = ""
    """What a reader must know to trust the value (e.g. the suite had failures)."""

    def met(self) -> bool | None:
        return None if self.goal is None else self.goal.met(self.value)

    def line(self) -> str:
        """The machine-readable ``name: value`` line."""
        return f"{self.name}: {format_value(self.value)}"


def format_value(value: float) -> str:
    """Three decimals (``inf`` when a bug went uncaught, ``nan`` when unmeasured)."""
    if math.isnan(value) or math.isinf(value):
        return str(value)
    return f"{value:.3f}"


def render_table(figures: Sequence[Figure]) -> str:
    """The human-readable table: figure, value, goal, met?."""
    rows = [("figure", "value", "goal", "met?")]
    for figure in figures:
        met = figure.met()
        rows.append(
            (
                figure.name,
                format_value(figure.value),
                "" if figure.goal is None else str(figure.goal),
                "" if met is None else ("yes" if met else "NO"),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "  ".join(
            (cell.ljust(width) if i in (0, 2, 3) else cell.rjust(width))
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    lines += [f"note: {figure.name}: {figure.note}" for figure in figures if figure.note]
    return "\n".join(lines)
