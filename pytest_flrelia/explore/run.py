"""One schedule through the harness: the scenario mapping in, what happened out.

The mapping is rendered as YAML and loaded by :func:`load_scenarios`, the loader a file
goes through (so a schedule that runs is one a user could have written), then run by
:func:`run_scenario`.  What comes back is only what exploring compares: pass, or the
leading check (the violation seen first, as the report orders it) and the report.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from pytest_flrelia.contract.target import Target
from pytest_flrelia.errors import HarnessError, ScenarioFailure, ScenarioUnsupported
from pytest_flrelia.harness.runner import run_scenario
from pytest_flrelia.harness.settings import Settings
from pytest_flrelia.scenario.loader import Scenario, load_scenarios

HARNESS_ERROR = "harness_error"
"""The leading check of a run that raised (no verdict): a defect of the harness or target."""
UNSUPPORTED = "unsupported"
"""The leading check of a schedule the target refused: a defect of the generator."""


@dataclass(frozen=True)
class RunResult:
    """One run of one schedule."""

    leading_check: str | None
    """``None``: it held."""
    failed_checks: tuple[str, ...] = ()
    report: str = ""
    error: str | None = None
    """The job's own error, if it failed (what ``expect.error`` is matched against)."""

    @property
    def ok(self) -> bool:
        return self.leading_check is None


def render(mapping: Mapping[str, object], header: str = "") -> str:
    """The scenario file for ``mapping``: ``header`` as ``#`` comments, then the YAML."""
    comments = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    body = yaml.safe_dump(dict(mapping), sort_keys=False, allow_unicode=True, width=88)
    return comments + body


def load(mapping: Mapping[str, object], directory: Path) -> Scenario:
    """``mapping`` written to ``directory`` and loaded as a file: the one scenario in it."""
    path = directory / f"{mapping['name']}.scenario.yaml"
    path.write_text(render(mapping), encoding="utf-8")
    scenarios = load_scenarios(path)
    if len(scenarios) != 1:  # a generated mapping has no matrix
        raise AssertionError(f"{path}: expected one scenario, got {len(scenarios)}")
    return scenarios[0]


def run_schedule(
    mapping: Mapping[str, object],
    settings: Settings,
    targets: Callable[[str], Target] | None = None,
) -> RunResult:
    """Load ``mapping`` as a file and run it against the session's target."""
    with tempfile.TemporaryDirectory(prefix="flrelia-explore-") as directory:
        scenario = load(mapping, Path(directory))
        try:
            run_scenario(scenario, settings, targets=targets)
        except HarnessError as err:
            return RunResult(HARNESS_ERROR, (HARNESS_ERROR,), err.report)
        except ScenarioFailure as err:
            checks = _earliest_first(err)
            result = None if err.outcome is None else err.outcome.result
            return RunResult(
                checks[0] if checks else HARNESS_ERROR,
                tuple(checks),
                err.report,
                None if result is None else result.error,
            )
        except ScenarioUnsupported as err:
            return RunResult(UNSUPPORTED, (UNSUPPORTED,), err.reason)
    return RunResult(None)


def _earliest_first(err: ScenarioFailure) -> list[str]:
    """The failed checks in report order: the violation seen first leads."""
    if err.verdict is None:
        return []
    failures = sorted(err.verdict.failures, key=lambda c: (c.at is None, c.at or 0.0))
    return [c.name for c in failures]


__all__ = ["HARNESS_ERROR", "UNSUPPORTED", "RunResult", "load", "render", "run_schedule"]
