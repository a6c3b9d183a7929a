"""What exploring returns: one :class:`ScheduleResult` per drawn schedule, and the totals.

Plain frozen values (JSON-able through :meth:`ScheduleResult.to_json`), so a worker
process can hand them back and the benchmarks can store them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

ScheduleVerdict = Literal["ok", "failed", "flaky", "skipped"]
"""``ok``: the schedule held; ``failed``: it failed, reproduced on rerun, and was shrunk;
``flaky``: it failed once and not (or differently) on rerun, so it is no finding;
``skipped``: the budget was spent before it was drawn (never a pass)."""


@dataclass(frozen=True)
class ScheduleResult:
    """One explored schedule."""

    seed: int
    """The session seed (``--flrelia-explore-seed``)."""
    index: int
    """Its number in the session; ``(seed, index)`` replays it."""
    verdict: ScheduleVerdict
    leading_check: str | None = None
    """The check leading the failure report (the violation seen first) of the drawn
    schedule, which the shrunk one fails with too; ``None`` when it held."""
    scenario_path: Path | None = None
    """The minimal failing scenario written to the output directory (``failed`` only)."""
    seconds: float = 0.0
    """Wall time spent on it: the run, the rerun and the shrink."""
    shrink_seconds: float = 0.0
    """Of ``seconds``, the part spent shrinking (the rest found it: the run and rerun)."""
    runs: int = 0
    """How many times a schedule was run for it (1 for a pass; more when shrinking)."""
    faults: int = 0
    """Faults in the drawn schedule."""
    shrunk_faults: int | None = None
    """Faults in the minimal failing schedule (``failed`` only)."""
    detail: str = ""
    """A line for people: the skip reason, the flaky run's checks, the shrink's end."""
    report: str = ""
    """The drawn schedule's failure report, the normal one (``failed`` and ``flaky``)."""
    scenario: str = ""
    """The minimal failing scenario file's text (``failed``), written or not."""

    @property
    def item_id(self) -> str:
        """The id of its test item: ``s<seed>-<index>``."""
        return schedule_id(self.seed, self.index)

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["scenario_path"] = None if self.scenario_path is None else str(self.scenario_path)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> ScheduleResult:
        values = dict(data)
        path = values.get("scenario_path")
        values["scenario_path"] = None if path is None else Path(str(path))
        return cls(**values)  # type: ignore[arg-type]


def schedule_id(seed: int, index: int) -> str:
    """``s<seed>-<index>``: the part of an item id that replays one schedule."""
    return f"s{seed}-{index}"


@dataclass(frozen=True)
class ExploreReport:
    """Every schedule of one exploration, in index order."""

    target: str
    variant: str | None
    seed: int
    schedules: tuple[ScheduleResult, ...] = field(default=())
    seconds: float = 0.0

    @property
    def failures(self) -> tuple[ScheduleResult, ...]:
        return tuple(s for s in self.schedules if s.verdict == "failed")

    @property
    def flaky(self) -> tuple[ScheduleResult, ...]:
        return tuple(s for s in self.schedules if s.verdict == "flaky")

    @property
    def ran(self) -> tuple[ScheduleResult, ...]:
        """The schedules drawn and run (not skipped for the budget)."""
        return tuple(s for s in self.schedules if s.verdict != "skipped")

    def first_failure(self) -> ScheduleResult | None:
        """The failure with the lowest index (the one a serial run finds first)."""
        return self.failures[0] if self.failures else None

    def time_to_find(self) -> float | None:
        """Seconds of exploring until the first failure was confirmed, shrink excluded:
        every schedule before it, plus its own run and rerun.  Exact for a serial run
        (``jobs=1``); with workers it is the work done, not the wall time."""
        spent = 0.0
        for schedule in self.schedules:
            if schedule.verdict == "failed":
                return spent + schedule.seconds - schedule.shrink_seconds
            spent += schedule.seconds
        return None

    def summary_lines(self) -> list[str]:
        """The summary table: one row per schedule that did not simply hold, then totals."""
        rows = [
            f"{s.item_id:<14} {s.verdict:<7} {s.leading_check or '-':<22} "
            f"{s.faults}->{s.shrunk_faults if s.shrunk_faults is not None else '-'} faults "
            f"{s.seconds:6.1f}s  {s.scenario_path or s.detail}"
            for s in self.schedules
            if s.verdict in ("failed", "flaky")
        ]
        ran = len(self.ran)
        skipped = len(self.schedules) - ran
        rate = 60.0 * ran / self.seconds if self.seconds > 0 else 0.0
        rows.append(
            f"explored {ran} schedules in {self.seconds:.1f}s ({rate:.0f}/min) against "
            f"{self.target}{'' if self.variant is None else ' variant ' + self.variant}, "
            f"seed {self.seed}: {len(self.failures)} failed, {len(self.flaky)} flaky, "
            f"{skipped} skipped (budget spent)"
        )
        return rows


__all__ = ["ExploreReport", "ScheduleResult", "ScheduleVerdict", "schedule_id"]
