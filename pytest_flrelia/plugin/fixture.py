"""The Python API: run a scenario from a test function and look at what happened.

The ``flrelia`` fixture (a :class:`Flrelia`) turns keyword arguments into a
scenario mapping, loads it through the very loader and validation a
``*.scenario.yaml`` file goes through, and runs it with the session's settings
(known bug, time scale, report directory, default bound)::

    def test_late_pull(flrelia):
        late = {"fault": "delayed_download", "site": "site-1", "delay": "500ms"}
        run = flrelia.run(sites=2, rounds=2, launch_once=False, faults=[late], within="10s")
        assert run.ok and run.result.rounds[1].ok
        run.check()   # raises ScenarioFailure with the failure report if a check failed

Keywords: every ``job`` key of a scenario file (``sites``, ``rounds``,
``launch_once``, ``tensors``, ``timeouts``...), the ``expect`` keys
(``within``, ``outcome``, ``error``, ``invariants``), ``faults``, ``name`` and
``description``.  ``@pytest.mark.flrelia(**keywords)`` gives defaults for the
test's runs; a keyword of the call wins.  A run is synchronous: every process
it started is gone when :meth:`Flrelia.run` returns.

This module imports the runtime; the plugin imports it only when a test asks
for the fixture, so collecting scenario files stays light.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from pytest_flrelia.contract.result import JobResult
from pytest_flrelia.contract.timeline import Event
from pytest_flrelia.errors import RunSpecError
from pytest_flrelia.harness.cutoff import CUT_KEY
from pytest_flrelia.harness.runner import (
    ScenarioFailure,
    ScenarioOutcome,
    ScenarioUnsupported,
    run_scenario,
)
from pytest_flrelia.harness.settings import Settings
from pytest_flrelia.judge.invariants import Check, Verdict
from pytest_flrelia.plugin import summary
from pytest_flrelia.scenario.catalog import close_match
from pytest_flrelia.scenario.loader import (
    Scenario,
    ScenarioError,
    ScenarioTimeoutWarning,
    load_scenarios,
    shipped_schema,
)
from pytest_flrelia.targets import Targets

MARKER = "flrelia"
MARKER_WHERE = "@pytest.mark.flrelia"
CALL_WHERE = "flrelia.run()"
EXPECT_KEYS: tuple[str, ...] = ("within", "outcome", "error", "invariants")
TOP_KEYS: tuple[str, ...] = ("name", "description", "faults")
FILE_NAME = "run.scenario.yaml"


@functools.lru_cache(maxsize=1)
def _job_keys() -> tuple[str, ...]:
    """The ``job`` keys of a scenario file, as the shipped schema has them."""
    job = shipped_schema()["$defs"]["scenario"]["properties"]["job"]
    return tuple(job["properties"])


def _key_path(keyword: str) -> tuple[str, ...]:
    """Where ``keyword`` goes in a scenario mapping: ``sites`` -> ``job.sites``."""
    if keyword in EXPECT_KEYS:
        return ("expect", keyword)
    if keyword in TOP_KEYS:
        return (keyword,)
    return ("job", keyword)


def valid_keywords() -> tuple[str, ...]:
    return (*_job_keys(), *EXPECT_KEYS, *TOP_KEYS)


@dataclass(frozen=True)
class FlreliaRun:
    """One scenario run from a test: its verdict, the job's result and the timeline."""

    scenario: Scenario
    verdict: Verdict
    result: JobResult | None
    """``None`` when the job never finished (or, for a failed run, if the runner's
    ``ScenarioFailure`` does not carry the run's outcome)."""
    report: str | None
    """The failure report, as a scenario file's failure shows it; ``None`` if every check held."""

    @property
    def ok(self) -> bool:
        """Whether the expectation and every invariant held."""
        return not self.verdict.failures

    @property
    def failures(self) -> list[Check]:
        return self.verdict.failures

    @property
    def events(self) -> list[Event]:
        """The run's timeline, in recording order (empty without a result)."""
        return self.result.timeline.events() if self.result is not None else []

    def check(self) -> None:
        """Raise ``ScenarioFailure`` with the failure report if a check failed."""
        __tracebackhide__ = True
        if self.report is not None:
            raise ScenarioFailure(self.report, self.verdict)


class Flrelia:
    """The ``flrelia`` fixture's value: runs scenarios for one test."""

    def __init__(
        self, item: pytest.Item, settings: Settings, targets: Targets | None = None
    ) -> None:
        self._item = item
        self._settings = settings
        self._targets = targets
        self._defaults = marker_defaults(item)
        self.runs: list[FlreliaRun] = []
        """Every run of this test, in order."""

    def run(self, **keywords: Any) -> FlreliaRun:
        """Run one scenario made of the marker's defaults and ``keywords``; never raises
        for a failed check (see :meth:`FlreliaRun.check`)."""
        __tracebackhide__ = True
        _check_keywords(keywords, CALL_WHERE)
        given = {**self._defaults, **keywords}
        where = {k: CALL_WHERE if k in keywords else MARKER_WHERE for k in given}
        given.setdefault("name", self._default_name())
        scenario = self._at_test(_load(_mapping(given), where))
        verdict: Verdict | None = None
        delivered = 0
        ran = True
        try:
            outcome = run_scenario(
                scenario,
                self._settings,
                nodeid=self._item.nodeid,
                cut=self._item.stash.get(CUT_KEY, None),
                targets=self._targets,
            )
        except ScenarioUnsupported as unsupported:
            ran = False  # nothing ran: no figures for the summary
            pytest.skip(unsupported.reason)
        except ScenarioFailure as failure:
            verdict = failure.verdict
            delivered = len(failure.outcome.delivered) if failure.outcome else 0
            if verdict is None:
                raise
            done = FlreliaRun(scenario, verdict, _failed_result(failure), failure.report)
        else:
            verdict, delivered = outcome.verdict, len(outcome.delivered)
            done = FlreliaRun(scenario, verdict, outcome.result, None)
        finally:
            if ran:
                summary.record(
                    self._item, summary.tally(verdict, len(scenario.faults), delivered)
                )
        self.runs.append(done)
        return done

    def _default_name(self) -> str:
        """``<module>.<test>``, then ``-2``, ``-3``... for later runs: unique in a session."""
        base = _scenario_name(f"{self._item.path.stem}.{self._item.name}")
        return base if not self.runs else f"{base}-{len(self.runs) + 1}"

    def _at_test(self, scenario: Scenario) -> Scenario:
        """The scenario located at the test function, which is what its report should name."""
        path, line, _ = self._item.reportinfo()
        line = line + 1 if isinstance(line, int) else 1  # reportinfo counts from 0
        return dataclasses.replace(scenario, path=Path(path), line=line)


def marker_defaults(item: pytest.Item) -> dict[str, Any]:
    """The keywords of the test's ``flrelia`` markers; the closest marker wins."""
    __tracebackhide__ = True
    defaults: dict[str, Any] = {}
    for mark in reversed(list(item.iter_markers(MARKER))):
        if mark.args:
            raise RunSpecError(
                f"{MARKER_WHERE} takes keyword arguments only, got {len(mark.args)} positional"
            )
        _check_keywords(mark.kwargs, MARKER_WHERE)
        defaults.update(mark.kwargs)
    return defaults


def _check_keywords(keywords: Mapping[str, object], where: str) -> None:
    __tracebackhide__ = True
    valid = valid_keywords()
    for keyword in keywords:
        if keyword not in valid:
            suggestion = close_match(keyword, valid)
            raise RunSpecError(
                f"{where}: unknown keyword {keyword!r}; valid: {', '.join(valid)}"
                + (f"; did you mean {suggestion!r}?" if suggestion else "")
            )


def _mapping(keywords: Mapping[str, Any]) -> dict[str, Any]:
    """The scenario mapping a file would hold for ``keywords``."""
    data: dict[str, Any] = {}
    for keyword, value in keywords.items():
        node = data
        *parents, leaf = _key_path(keyword)
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return data


def _load(data: Mapping[str, Any], where: Mapping[str, str]) -> Scenario:
    """``data`` through the scenario loader, as a file on disk would go.

    The loader reads files only, so the mapping is written as YAML to a
    directory that is gone when this returns.
    """
    __tracebackhide__ = True
    try:
        text = yaml.safe_dump(dict(data), sort_keys=False)
    except yaml.representer.RepresenterError as err:
        shown = err.args[1] if len(err.args) > 1 else err
        raise RunSpecError(
            f"{CALL_WHERE}: {shown!r} is not a value a scenario file can hold; "
            "use str, int, float, bool, lists and dicts"
        ) from err
    with tempfile.TemporaryDirectory(prefix="flrelia-run-") as directory:
        path = Path(directory) / FILE_NAME
        path.write_text(text, encoding="utf-8")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ScenarioTimeoutWarning)
                (scenario,) = load_scenarios(path)
        except ScenarioError as err:
            raise RunSpecError(_said_as_keywords(err, where)) from None
    for warned in caught:  # said of a file gone by now: say it of the keyword instead
        message = warned.message
        if isinstance(message, ScenarioTimeoutWarning) and message.located is not None:
            message = ScenarioTimeoutWarning(_said_as_keywords(message.located, where))
        warnings.warn(message, stacklevel=3)
    return scenario


def _said_as_keywords(err: ScenarioError, where: Mapping[str, str]) -> str:
    """The loader's error in the caller's words: the keyword and where it was given."""
    parts = err.key_path.split(".", 1) if err.key_path else [""]
    keyword = parts[0]
    if keyword in ("job", "expect") and len(parts) > 1:
        keyword = re.split(r"[.\[]", parts[1], maxsplit=1)[0]
        shown = parts[1]
    else:
        keyword = re.split(r"[.\[]", keyword, maxsplit=1)[0]
        shown = err.key_path
    source = where.get(keyword, CALL_WHERE)
    located = ScenarioError(err.path, None, shown, err.message, err.valid, err.suggestion)
    return located.format(source)


def _scenario_name(text: str) -> str:
    """``text`` as a valid scenario name: lowercase, ``[a-z0-9._-]``, starting with one."""
    name = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-._")
    return name or "run"


def _failed_result(failure: ScenarioFailure) -> JobResult | None:
    """The job result of a failed run, when the runner attaches its outcome to the failure."""
    outcome = getattr(failure, "outcome", None)
    return outcome.result if isinstance(outcome, ScenarioOutcome) else None


__all__ = ["Flrelia", "FlreliaRun", "RunSpecError", "marker_defaults", "valid_keywords"]
