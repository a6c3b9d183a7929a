"""What the two generated matrices share (docs/bug-zoo.md, docs/nvflare.md): the
markdown of a scenario x column table and the words of its cells, so a "caught" reads
the same on both pages."""

from __future__ import annotations

from collections.abc import Sequence

NONE = "-"
"""A table cell with nothing to show."""


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A markdown table: the header, its rule, one line per row."""
    return [
        "| " + " | ".join(header) + " |",
        "|---|" + "---|" * (len(header) - 1),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def passed() -> str:
    return "passed"


def caught(check: str | None, *, bold: bool = False) -> str:
    """A failure led by ``check``: **bold** when it is one the column is meant to show."""
    text = f"caught (`{check}`)"
    return f"**{text}**" if bold else text


def failed(check: str | None) -> str:
    """A failure where none may be (the correct runtime, a pinned pass)."""
    return f"**FAILED** (`{check}`)"


def harness_error() -> str:
    return "**harness error**"


def xfail(check: str | None) -> str:
    return f"xfail (`{check}`)"


def skipped(reason: str | None) -> str:
    return "skipped" + (f" ({reason})" if reason else "")


__all__ = ["NONE", "caught", "failed", "harness_error", "passed", "skipped", "table", "xfail"]
