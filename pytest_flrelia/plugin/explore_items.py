"""``pytest --flrelia-explore=N``: generated schedules as test items.

With the option and no paths, the session collects nothing else: N items
``explore[s<seed>-<i>]`` children of the session, which pytest-xdist spreads over its
workers like any test.  Each runs :func:`~pytest_flrelia.explore.driver.explore_one`
against the session's target and variant.  The budget is one deadline for the whole
session (the controller's start plus the budget, handed to every worker): an item that
starts after it is skipped "budget spent", never passed.  The seed is the controller's
too (given, or drawn once), so every worker draws the same schedules.

Results travel in ``user_properties`` (as the summary's figures do), so the controller
prints a progress line per schedule and the summary table under xdist as well.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_flrelia.contract.units import UnitError, format_duration, parse_duration
from pytest_flrelia.harness.settings import StoreOnce
from pytest_flrelia.plugin.collect import SETTINGS_KEY, TARGETS_KEY

COUNT = ("--flrelia-explore", "flrelia_explore")
BUDGET = ("--flrelia-explore-budget", "flrelia_explore_budget")
SEED = ("--flrelia-explore-seed", "flrelia_explore_seed")
OUT = ("--flrelia-explore-out", "flrelia_explore_out")
HELP = {
    COUNT: "run N generated fault schedules against the selected target and variant; "
    "without paths, only those",
    BUDGET: "stop drawing new schedules after this long (default 5m); the rest are skipped",
    SEED: "the exploration's seed (default: drawn, and printed); with an item id, "
    "it replays one schedule",
    OUT: "write each shrunk failing schedule here as <name>.scenario.yaml",
}
METAVAR = {COUNT: "N", BUDGET: "DURATION", SEED: "SEED", OUT: "DIR"}
DEFAULT_BUDGET = 300.0
PROPERTY = "flrelia_explore"
"""The ``user_properties`` name a schedule's result travels under."""
PLUGIN_NAME = "flrelia-explore"
WORKER_KEY = "flrelia_explore"
"""The ``workerinput`` key the controller's seed, start and mode travel under."""


def _dest(option: str) -> str:
    return option.lstrip("-").replace("-", "_")


def addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("flrelia")
    for source in (COUNT, BUDGET, SEED, OUT):
        option, ini = source
        group.addoption(
            option, dest=_dest(option), metavar=METAVAR[source], help=HELP[source], action=StoreOnce
        )
        parser.addini(ini, HELP[source])


def _raw(config: pytest.Config, source: tuple[str, str]) -> tuple[str, str] | None:
    """The value and where it was written (option, else ini), or ``None``."""
    option, ini = source
    value = config.getoption(_dest(option), None)
    if value is not None:
        return str(value), option
    ini_value = config.getini(ini)
    if ini_value not in (None, ""):
        return str(ini_value).strip(), f"ini {ini}"
    return None


def _integer(config: pytest.Config, source: tuple[str, str], minimum: int) -> int | None:
    raw = _raw(config, source)
    if raw is None:
        return None
    value, where = raw
    try:
        number = int(value)
    except ValueError:
        raise pytest.UsageError(f"{where}: expected an integer, got {value!r}") from None
    if number < minimum:
        raise pytest.UsageError(f"{where}: must be >= {minimum}, got {number}")
    return number


class Exploration:
    """The session's exploration: its options, and the results the controller gathers."""

    def __init__(self, config: pytest.Config, count: int) -> None:
        self.config = config
        self.count = count
        budget = _raw(config, BUDGET)
        try:
            self.budget = DEFAULT_BUDGET if budget is None else parse_duration(*budget)
        except UnitError as err:
            raise pytest.UsageError(str(err)) from None
        out = _raw(config, OUT)
        self.out_dir = None if out is None else (config.invocation_params.dir / out[0])
        shared = getattr(config, "workerinput", {}).get(WORKER_KEY)
        if shared is not None:  # an xdist worker: the controller decided
            self.seed = int(shared["seed"])
            self.started = float(shared["started"])
            self.only = bool(shared["only"])
        else:
            given = _integer(config, SEED, 0)
            self.seed = random.randrange(1_000_000) if given is None else given
            self.started = time.time()
            self.only = config.args_source != pytest.Config.ArgsSource.ARGS
        self.results: list[dict[str, Any]] = []

    def deadline(self) -> float:
        """The session's deadline on this process's ``time.monotonic`` clock."""
        return time.monotonic() + (self.started + self.budget - time.time())

    # -- xdist: the controller hands its decisions to every worker ---------------------

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput[WORKER_KEY] = {
            "seed": self.seed,
            "started": self.started,
            "only": self.only,
        }

    # -- collection ---------------------------------------------------------------------

    def pytest_report_header(self) -> str:
        return (
            f"flrelia explore: {self.count} schedules, budget {format_duration(self.budget)}, "
            f"seed {self.seed} (replay: --flrelia-explore-seed={self.seed})"
        )

    def pytest_ignore_collect(self) -> bool | None:
        return True if self.only else None

    @pytest.hookimpl(tryfirst=True)  # before -k and -m deselect
    def pytest_collection_modifyitems(
        self, session: pytest.Session, items: list[pytest.Item]
    ) -> None:
        from pytest_flrelia.explore.report import schedule_id  # noqa: PLC0415

        items.extend(
            ExploreItem.from_parent(
                session,
                name=f"explore[{schedule_id(self.seed, i)}]",
                nodeid=f"explore[{schedule_id(self.seed, i)}]",
                index=i,
                exploration=self,
            )
            for i in range(self.count)
        )

    # -- progress and summary (the controller, or a run without xdist) -----------------

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "teardown" or hasattr(self.config, "workerinput"):
            return
        for name, value in report.user_properties:
            if name == PROPERTY:
                self.results.append(json.loads(str(value)))
                self._progress()

    def _progress(self) -> None:
        from pytest_flrelia.explore.api import progress_line  # noqa: PLC0415
        from pytest_flrelia.explore.report import ScheduleResult  # noqa: PLC0415

        failed = sum(r["verdict"] == "failed" for r in self.results)
        line = progress_line(
            ScheduleResult.from_json(self.results[-1]),
            len(self.results),
            self.count,
            time.time() - self.started,
            failed,
        )
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(line)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if hasattr(self.config, "workerinput"):
            return
        from pytest_flrelia.explore.report import ExploreReport, ScheduleResult  # noqa: PLC0415

        settings = self.config.stash[SETTINGS_KEY]
        schedules = sorted(
            (ScheduleResult.from_json(r) for r in self.results), key=lambda r: r.index
        )
        report = ExploreReport(
            settings.target,
            settings.known_bug,
            self.seed,
            tuple(schedules),
            time.time() - self.started,
        )
        terminalreporter.write_sep("=", "flrelia explore")
        for line in report.summary_lines():
            terminalreporter.write_line(line)


class ExploreItem(pytest.Item):
    """One generated schedule: drawn from ``(seed, index)``, run, shrunk if it fails."""

    def __init__(self, *, index: int, exploration: Exploration, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.index = index
        self.exploration = exploration

    def runtest(self) -> None:
        from pytest_flrelia.explore.driver import explore_one  # noqa: PLC0415 (the runtime)
        from pytest_flrelia.explore.report import ScheduleResult  # noqa: PLC0415

        exploration = self.exploration
        deadline = exploration.deadline()
        if time.monotonic() >= deadline:
            skipped = ScheduleResult(exploration.seed, self.index, "skipped", detail="budget spent")
            self.user_properties.append((PROPERTY, json.dumps(skipped.to_json())))
            pytest.skip("budget spent")
        settings = self.config.stash[SETTINGS_KEY]
        targets = self.config.stash[TARGETS_KEY]
        info = targets(settings.target).info
        result = explore_one(
            info,
            settings,
            exploration.seed,
            self.index,
            deadline=deadline,
            out_dir=exploration.out_dir,
            targets=targets,
        )
        self.user_properties.append((PROPERTY, json.dumps(result.to_json())))
        if result.verdict == "flaky":
            pytest.skip(f"FLAKY, not a finding: {result.detail}")
        if result.verdict == "failed":
            raise ExploredFailure(result.report, result.scenario, result.scenario_path)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, ExploredFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, self.name


class ExploredFailure(AssertionError):
    """A schedule failed, reproduced, and was shrunk: its report and the minimal file."""

    def __init__(self, report: str, scenario: str, path: Path | None) -> None:
        where = (
            f"written to {path}"
            if path is not None
            else "pass --flrelia-explore-out=DIR to write it"
        )
        super().__init__(f"{report}\n\nminimal failing schedule ({where}):\n{scenario}")


def configure(config: pytest.Config) -> None:
    """Register the exploration when ``--flrelia-explore`` (or its ini twin) asks for one."""
    count = _integer(config, COUNT, 1)
    if count is not None:
        config.pluginmanager.register(Exploration(config, count), PLUGIN_NAME)


__all__ = ["Exploration", "ExploreItem", "ExploredFailure", "addoption", "configure"]
