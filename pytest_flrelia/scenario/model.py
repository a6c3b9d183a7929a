"""What a scenario file means: the values the loader builds and the runner reads."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from pytest_flrelia.contract.faults import FaultSpec
from pytest_flrelia.contract.job import JobConfig
from pytest_flrelia.scenario.catalog import INVARIANTS, Outcome


@dataclass(frozen=True)
class Expectation:
    """What a run must show."""

    outcome: Outcome = "success"
    error: str | None = None
    """A regex the failure's error message must contain a match of (``re.search``)."""
    within: float | None = None
    """Wall-clock bound in seconds; ``None``: the session's ``--flrelia-within``."""
    invariants: tuple[str, ...] = ()
    """The invariants the scenario names; empty: every one that applies (see runner)."""

    def error_matches(self, text: str) -> bool:
        """Whether ``text`` satisfies ``error`` (always, when no error is expected)."""
        return self.error is None or re.search(self.error, text) is not None

    def within_or(self, default: float) -> float:
        """The bound to enforce, given the session default."""
        return default if self.within is None else self.within


@dataclass(frozen=True)
class Scenario:
    """One runnable scenario (a matrix entry expands into several)."""

    name: str
    description: str
    job: JobConfig
    faults: tuple[FaultSpec, ...]
    expect: Expectation
    target: str | None
    marks: tuple[str, ...]
    catches: tuple[str, ...]
    """Known-bug slugs the scenario is designed to catch, in file order."""
    path: Path
    line: int
    """1-based line of the scenario's ``name`` key."""
    matrix_case: tuple[tuple[str, object], ...] = field(default=())
    """The matrix values that made this scenario, as written (``()`` without a matrix)."""
    pinned: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """Slug -> the check that must fail for it (``catches: {slug: check}``); a slug of
    the plain list form has no entry."""


def default_invariants(outcome: str) -> tuple[str, ...]:
    """The invariants that apply to ``outcome`` when a scenario does not list any."""
    return tuple(name for name, inv in INVARIANTS.items() if outcome in inv.outcomes)


__all__ = ["Expectation", "Scenario", "default_invariants"]
