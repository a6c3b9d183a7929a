"""What a target returns for a run: the job's outcome, per round, and the global model.

Targets fill it from what they observed; the judge reads only this and the timeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy.typing as npt

from pytest_flrelia.contract.job import JobConfig
from pytest_flrelia.contract.timeline import EventKind, Timeline

Array = npt.NDArray[Any]
"""A tensor: a numpy array of any dtype."""

AddedRange = tuple[str, int, int]
"""``(site, start, stop)``: elements ``start:stop`` of a site's tensor were added to the sum."""


@dataclass
class RoundOutcome:
    round: int
    kind: str
    ok: bool = False
    error: str | None = None
    seconds: float = 0.0
    checksums: dict[str, str] = field(default_factory=dict)
    """sha256 of each aggregated tensor of the new global model."""
    bytes_downloaded: int = 0
    aggregation_order: dict[str, list[AddedRange]] = field(default_factory=dict)
    """Per tensor, every range of elements added into the sum, in the order added."""



@dataclass
class JobResult:
    """Everything a caller (or an invariant) needs to judge a run."""

    config: JobConfig
    ok: bool
    error: str | None
    rounds: list[RoundOutcome]
    global_model: dict[str, Array]
    timeline: Timeline
    seconds: float
    site_errors: dict[str, str] = field(default_factory=dict)

    @property
    def bytes_downloaded(self) -> int:
        return sum(r.bytes_downloaded for r in self.rounds)

    @property
    def launched_pids(self) -> list[int]:
        return [int(e.detail["pid"]) for e in self.timeline.events(EventKind.LAUNCH)]


__all__ = ["AddedRange", "Array", "JobResult", "RoundOutcome"]
