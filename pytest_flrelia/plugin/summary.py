"""The session's closing line: how many scenarios ran, faults acted, invariants were checked.

Figures are counted where a scenario runs (a scenario item, or a
``flrelia.run()`` call) and put in the test's ``user_properties``: those travel
inside the test report, so under xdist they reach the controller, which sums
them and prints the line.  Nothing is kept in module globals.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING

import pytest

from pytest_flrelia.judge.report import Against

if TYPE_CHECKING:
    from pytest_flrelia.contract.target import Target
    from pytest_flrelia.harness.settings import Settings
    from pytest_flrelia.judge.invariants import Verdict

PROPERTY = "flrelia"
"""The ``user_properties`` name the figures of one scenario run travel under."""
COUNTED_PHASE = "teardown"
"""The report whose properties are summed: the last one, it holds every run of the test."""
REPORTER_NAME = "flrelia-summary"


@dataclass(frozen=True)
class Tally:
    """Figures of one run, or the sum over a session."""

    scenarios: int = 0
    faults: int = 0
    """Faults the scenarios planned."""
    delivered: int = 0
    """Planned faults that acted at least once (a ``fault`` event carries their id)."""
    invariants: int = 0
    """Checks that had something to look at (the expectation included)."""
    failed: int = 0

    def __add__(self, other: Tally) -> Tally:
        return Tally(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(Tally)))

    def line(self, against: str | None = None) -> str:
        """The closing line; ``against`` names the session's target and variant."""
        return (
            f"flrelia: {_count(self.scenarios, 'scenario')}"
            + (f" against {against}" if against else "")
            + f", {self._delivered()}, "
            f"{_count(self.invariants, 'invariant')} checked ({self.failed} failed)"
        )

    def _delivered(self) -> str:
        """``3 faults delivered``, or ``2 of 3 faults delivered`` when some never acted."""
        if self.delivered == self.faults:
            return f"{_count(self.faults, 'fault')} delivered"
        return f"{self.delivered} of {_count(self.faults, 'fault')} delivered"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def tally(verdict: Verdict | None, faults: int, delivered: int) -> Tally:
    """One scenario run: ``verdict`` from its ``ScenarioOutcome`` or ``ScenarioFailure``
    (``None`` when the harness itself failed), ``faults`` as many as it planned,
    ``delivered`` as many of them as acted."""
    checked = [c for c in verdict.checks if c.applicable] if verdict is not None else []
    return Tally(1, faults, delivered, len(checked), sum(not c.ok for c in checked))


def record(item: pytest.Item, figures: Tally) -> None:
    """Attach ``figures`` to ``item``: they go out with its reports."""
    item.user_properties.append((PROPERTY, asdict(figures)))


def from_report(report: pytest.TestReport) -> Tally:
    """The sum of the figures a report carries (none: a zero tally)."""
    total = Tally()
    names = {f.name for f in fields(Tally)}
    for name, value in report.user_properties:
        if name == PROPERTY and isinstance(value, Mapping):
            total += Tally(**{k: int(v) for k, v in value.items() if k in names})
    return total


class SummaryReporter:
    """Sums the figures of every test report and prints the line at the end.

    A plugin object rather than module hooks: ``pytest_runtest_logreport``
    gets no config to find a stash in.  Registered on the controller only.
    """

    def __init__(
        self, settings: Settings | None = None, targets: Callable[[str], Target] | None = None
    ) -> None:
        self.total = Tally()
        self._settings = settings
        self._targets = targets

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == COUNTED_PHASE:
            self.total += from_report(report)

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.total.scenarios:
            terminalreporter.write_line(self.total.line(self._against()))

    def _against(self) -> str | None:
        """The session's target and variant, in the words of the failure reports (a
        scenario naming its own target says so in its report)."""
        if self._settings is None:
            return None
        version = None
        if self._targets is not None:
            try:
                version = self._targets(self._settings.target).info.version
            except Exception:  # a target that cannot be built: its runs said so already
                version = None
        return Against(self._settings.target, self._settings.known_bug, version=version).text()


__all__ = ["PROPERTY", "SummaryReporter", "Tally", "from_report", "record", "tally"]
