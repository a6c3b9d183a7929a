"""Scenario files as pytest collectors: one item per (matrix-expanded) scenario.

A file that does not load is one collection error showing the loader's
``file:line: key: message`` text, no traceback; the other files are still
collected.  An item whose target cannot run it (a fault, scope, ``at:`` point,
event kind or variant it does not declare) is collected with a skip mark giving
the reason: the target's declarations are read at collection.  Items run through
:func:`pytest_flrelia.harness.runner.run_scenario`; each run's figures go to the
session summary (:mod:`~pytest_flrelia.plugin.summary`).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_flrelia.contract.target import TargetInfo
from pytest_flrelia.errors import UnknownTargetError
from pytest_flrelia.harness.cutoff import CUT_KEY
from pytest_flrelia.harness.settings import Settings
from pytest_flrelia.plugin import known_issues, run_record, summary
from pytest_flrelia.scenario.loader import Scenario, ScenarioError, load_scenarios
from pytest_flrelia.targets import Targets

if TYPE_CHECKING:
    from _pytest._code.code import TerminalRepr, TracebackStyle

    from pytest_flrelia.harness.runner import ScenarioOutcome
    from pytest_flrelia.judge.invariants import Verdict

SCENARIO_SUFFIXES: tuple[str, ...] = (".scenario.yaml", ".scenario.yml")
SCENARIO_MARKER = "scenario"
RUNNER_MODULE = "pytest_flrelia.harness.runner"
REPEAT_OPTION = "count"
"""pytest-repeat's ``--count`` destination."""
JOB_TIMEOUT_WARNING = "pytest_flrelia.contract.timeout_checks.TimeoutConflictWarning"
"""What the job says of contradicting timeouts; an item ignores it, as its file's
``ScenarioTimeoutWarning`` said it at collection, with file and line."""

SETTINGS_KEY = pytest.StashKey[Settings]()
"""The session's :class:`Settings`, put in ``config.stash`` by ``pytest_configure``."""
TARGETS_KEY = pytest.StashKey[Targets]()
"""The session's targets (its ``pytest_flrelia_make_target`` hook first), put in
``config.stash`` by ``pytest_configure``."""
OUTCOME_KEY = pytest.StashKey[object]()
"""What ``run_scenario`` returned for an item (a ``runner.ScenarioOutcome``), in ``item.stash``."""
_NAMES_KEY = pytest.StashKey[dict[str, tuple[Path, int]]]()
"""Scenario name -> (file, line) where the session first saw it: names are session-unique."""


def is_scenario_file(path: Path) -> bool:
    return path.name.endswith(SCENARIO_SUFFIXES)


class ScenarioFile(pytest.File):
    """A ``*.scenario.yaml`` file."""

    def collect(self) -> Iterator[pytest.Item]:
        try:
            scenarios = load_scenarios(self.path)
        except ScenarioError as err:
            raise self.CollectError(err.format(self._shown_path())) from err
        self._claim_names(scenarios)
        count = repeat_count(self.config)
        for scenario in (s for base in scenarios for s in repeated(base, count)):
            # An explicit string id is parsed like any test id, so a matrix name's
            # "[...]" is its parameter part (pytest 9 compares structured ids: --lf).
            item = ScenarioItem.from_parent(
                self,
                name=scenario.name,
                nodeid=f"{self.nodeid}::{scenario.name}",
                scenario=scenario,
            )
            item.add_marker(SCENARIO_MARKER)
            item.add_marker(pytest.mark.filterwarnings(f"ignore::{JOB_TIMEOUT_WARNING}"))
            for index, mark in enumerate(scenario.marks):
                try:
                    item.add_marker(mark)
                except pytest.fail.Exception as err:  # unregistered under --strict-markers
                    raise self.CollectError(
                        ScenarioError(
                            self.path, scenario.line, f"marks[{index}]", str(err.msg)
                        ).format(self._shown_path())
                    ) from err
            item.extra_keyword_matches.update(scenario.catches)
            reason, version = self._unsupported(scenario)
            if reason is not None:
                item.add_marker(pytest.mark.skip(reason=reason))
            run_record.describe(item, scenario, self.config.stash[SETTINGS_KEY], version)
            yield item

    def _unsupported(self, scenario: Scenario) -> tuple[str | None, str | None]:
        """Why the scenario's target cannot run it, from what the target declares, and
        the version the target says it is."""
        runner = importlib.import_module(RUNNER_MODULE)
        settings = self.config.stash[SETTINGS_KEY]
        name = runner.target_name(scenario, settings)
        try:
            target = self.config.stash[TARGETS_KEY](name)
        except UnknownTargetError as err:
            return f"target {name!r} is not available in this session: {err}", None
        except Exception:  # a target that cannot be built: its run shows the traceback
            return None, None
        reason: str | None = runner.unsupported_reason(scenario, settings, target)
        return reason, target.info.version

    def _claim_names(self, scenarios: list[Scenario]) -> None:
        """Refuse a name another file of the session already uses."""
        seen = self.config.stash.setdefault(_NAMES_KEY, {})
        for scenario in scenarios:
            first = seen.get(scenario.name)
            if first is not None and first[0] != self.path:
                raise self.CollectError(
                    ScenarioError(
                        self.path,
                        scenario.line,
                        "name",
                        f"duplicate scenario name {scenario.name!r}; "
                        f"first defined at {self._shown_path(first[0])}:{first[1]}",
                    ).format(self._shown_path())
                )
        for scenario in scenarios:
            seen.setdefault(scenario.name, (self.path, scenario.line))

    def _shown_path(self, path: Path | None = None) -> str:
        """``path`` as the user can open it from where pytest was started."""
        path = self.path if path is None else path
        invocation_dir = self.config.invocation_params.dir
        return (
            os.path.relpath(path, invocation_dir)
            if path.is_relative_to(invocation_dir)
            else str(path)
        )


class ScenarioItem(pytest.Item):
    """One scenario run against the session's target."""

    def __init__(self, *, scenario: Scenario, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scenario = scenario

    def runtest(self) -> None:
        runner = importlib.import_module(RUNNER_MODULE)
        settings: Settings = self.config.stash[SETTINGS_KEY]
        verdict: Verdict | None = None
        faults, delivered = len(self.scenario.faults), 0
        ran = True
        info = self._target_info(runner, settings)
        issue = known_issues.issue_of(info, self.scenario, settings.known_bug) if info else None
        version = info.version if info is not None else None
        try:
            outcome: ScenarioOutcome = runner.run_scenario(
                self.scenario,
                settings,
                nodeid=self.nodeid,
                cut=self.stash.get(CUT_KEY, None),
                targets=self.config.stash[TARGETS_KEY],
            )
        except runner.ScenarioUnsupported as unsupported:
            ran = False  # nothing ran: no figures for the summary
            pytest.skip(unsupported.reason)
        except runner.ScenarioFailure as failure:
            verdict = failure.verdict
            if failure.outcome is not None:
                delivered = len(failure.outcome.delivered)
            expected = issue is not None and known_issues.judge_failure(issue, verdict) is not None
            race = None
            if not expected and info is not None and failure.outcome is not None:
                race = info.known_race(failure.outcome.events)
            run_record.ran(self, verdict, failure.outcome, issue, race)
            if issue is not None and expected:
                known_issues.expected_failure(issue)
            if race is not None:
                known_issues.race_hit(*race)
            if issue is not None:
                lead = verdict.leading if verdict is not None else None
                note = known_issues.other_check_note(issue, lead.name if lead else None)
                failure.report = f"{failure.report}\n{note}"
            raise
        else:
            verdict, delivered = outcome.verdict, len(outcome.delivered)
            self.stash[OUTCOME_KEY] = outcome
            run_record.ran(self, verdict, outcome, issue, None)
            if issue is not None:
                known_issues.fixed(issue, version)
        finally:  # a harness error still ran a scenario: it counts, with no checks
            if ran:
                summary.record(self, summary.tally(verdict, faults, delivered))

    def _target_info(self, runner: Any, settings: Settings) -> TargetInfo | None:
        """What the item's target declares (``None``: it cannot be built; its run says so)."""
        try:
            target = self.config.stash[TARGETS_KEY](runner.target_name(self.scenario, settings))
        except Exception:
            return None
        info: TargetInfo = target.info
        return info

    def repr_failure(
        self,
        excinfo: pytest.ExceptionInfo[BaseException],
        style: TracebackStyle | None = None,
    ) -> str | TerminalRepr:
        """A scenario failure is its report, which already says what happened: no traceback."""
        failure_type = getattr(sys.modules.get(RUNNER_MODULE), "ScenarioFailure", None)
        if isinstance(failure_type, type) and isinstance(excinfo.value, failure_type):
            return str(getattr(excinfo.value, "report", excinfo.value))
        return super().repr_failure(excinfo, style)

    def reportinfo(self) -> tuple[Path, int, str]:
        # pytest counts lines from 0 here and adds 1 when it shows them.
        return self.path, self.scenario.line - 1, f"scenario: {self.scenario.name}"


def repeat_count(config: pytest.Config) -> int:
    """pytest-repeat's ``--count`` (1 without the plugin): its ``pytest_generate_tests``
    parametrizes functions only, so scenario items repeat here."""
    count = getattr(config.option, REPEAT_OPTION, 1)
    return count if isinstance(count, int) and count > 1 else 1


def repeated(scenario: Scenario, count: int) -> Iterator[Scenario]:
    """``scenario`` ``count`` times, named as pytest-repeat names a function's repeats:
    ``name[1-3]``, or ``name[launch_once=true-1-3]`` for a matrix case."""
    if count == 1:
        yield scenario
        return
    base, params = scenario.name, ""
    if base.endswith("]") and "[" in base:
        base, params = base[:-1].split("[", 1)
        params += "-"
    for step in range(1, count + 1):
        yield dataclasses.replace(scenario, name=f"{base}[{params}{step}-{count}]")


def collect_file(file_path: Path, parent: pytest.Collector) -> ScenarioFile | None:
    """The collector for ``file_path`` if it is a scenario file."""
    if not is_scenario_file(file_path):
        return None
    return ScenarioFile.from_parent(parent, path=file_path)
