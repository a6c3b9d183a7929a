"""Named failpoints (placeholder: every call is a no-op until the engine lands)."""

from __future__ import annotations


def failpoint(name: str, *, site: str | None = None, round: int | None = None) -> None:
    """Mark an interesting point; configured failpoints act here."""
    del name, site, round
