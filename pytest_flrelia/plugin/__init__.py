"""pytest hooks, options and fixtures of pytest-flrelia, in the order pytest calls them.

The work lives in the modules these hooks call: :mod:`~pytest_flrelia.harness.settings`
(options -> one frozen record), :mod:`~pytest_flrelia.plugin.collect` (scenario files
-> items), :mod:`~pytest_flrelia.scenario.loader` (YAML -> scenarios),
:mod:`~pytest_flrelia.plugin.summary` (the closing line), :mod:`~pytest_flrelia.plugin.fixture`
(the ``flrelia`` fixture, imported when a test asks for it: it loads the runtime).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_flrelia.contract.timeout_checks import TimeoutConflictWarning
from pytest_flrelia.contract.units import format_duration
from pytest_flrelia.harness import cutoff, termination
from pytest_flrelia.harness.settings import (
    KNOWN_BUG,
    REPORT,
    TARGET,
    TIME_SCALE,
    WITHIN,
    Settings,
    StoreOnce,
    settings_from_config,
)
from pytest_flrelia.plugin import explore_items, hooks, run_record
from pytest_flrelia.plugin.collect import (
    SCENARIO_MARKER,
    SETTINGS_KEY,
    TARGETS_KEY,
    ScenarioFile,
    ScenarioItem,
    collect_file,
)
from pytest_flrelia.plugin.summary import REPORTER_NAME, SummaryReporter
from pytest_flrelia.targets import Targets
from pytest_flrelia.targets.reference.variants import SUMMARIES

if TYPE_CHECKING:
    from pytest_flrelia.plugin.fixture import Flrelia

TARGET_HELP = (
    "system under test: 'reference' (default), a target a conftest.py supplies "
    "(pytest_flrelia_make_target) or one plugged in through the 'flrelia.targets' "
    "entry point group"
)
KNOWN_BUG_HELP = (
    "run against the known-bug variant SLUG of the reference implementation "
    "(list them with --flrelia-known-bugs)"
)
KNOWN_BUGS_HELP = "list the known-bug slugs with one line each and exit"
REPORT_HELP = "write, per scenario, the timeline (JSON lines) and a Mermaid sequence diagram to DIR"
TIME_SCALE_HELP = (
    "multiply every scenario duration by this factor (default 1.0; more on slow hosts)"
)
WITHIN_HELP = "wall-clock bound of a scenario that sets no expect.within (default 30s)"
FLRELIA_MARKER_HELP = (
    "flrelia(**keywords): defaults for flrelia.run() in this test: job keys (sites, rounds, "
    "launch_once, tensors, timeouts, ...), faults, and expect keys (within, outcome, ...)"
)
SCENARIO_MARKER_HELP = f"{SCENARIO_MARKER}: a test collected from a *.scenario.yaml file"

SCENARIO_COLLECT_ERRORS_KEY = pytest.StashKey[int]()
SIGTERM_RESTORE_KEY = pytest.StashKey[Callable[[], None] | None]()
"""Restores SIGTERM's default action at unconfigure, if the plugin changed it."""
"""How many scenario files failed to collect; if they are all the collection errors,
the other files still run (see ``pytest_runtestloop``)."""


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hooks)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("flrelia", "fault-injection scenarios (pytest-flrelia)")
    for source, metavar, help_text in (
        (TARGET, "NAME", TARGET_HELP),
        (KNOWN_BUG, "SLUG", KNOWN_BUG_HELP),
        (REPORT, "DIR", REPORT_HELP),
        (TIME_SCALE, "FACTOR", TIME_SCALE_HELP),
        (WITHIN, "DURATION", WITHIN_HELP),
    ):
        group.addoption(
            source.option, dest=source.dest, metavar=metavar, help=help_text, action=StoreOnce
        )
        parser.addini(source.ini, help_text)
    group.addoption(run_record.OPTION, dest=run_record.DEST, metavar="PATH", help=run_record.HELP)
    group.addoption(
        "--flrelia-known-bugs",
        dest="flrelia_known_bugs",
        action="store_true",
        help=KNOWN_BUGS_HELP,
    )
    explore_items.addoption(parser)


def pytest_cmdline_main(config: pytest.Config) -> int | None:
    if config.getoption("flrelia_known_bugs"):
        width = max(len(slug) for slug in SUMMARIES)
        for slug, summary in SUMMARIES.items():
            print(f"{slug:<{width}}  {summary}")
        return 0
    return None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", FLRELIA_MARKER_HELP)
    config.addinivalue_line("markers", SCENARIO_MARKER_HELP)
    targets = Targets(
        lambda name: config.hook.pytest_flrelia_make_target(name=name, config=config)
    )
    config.stash[TARGETS_KEY] = targets
    settings = settings_from_config(config, targets)
    config.stash[SETTINGS_KEY] = settings
    config.stash[SCENARIO_COLLECT_ERRORS_KEY] = 0
    if not hasattr(config, "workerinput"):  # xdist workers send their reports to the controller
        config.pluginmanager.register(SummaryReporter(settings, targets), REPORTER_NAME)
        json_path = config.getoption(run_record.DEST)
        if json_path:
            config.pluginmanager.register(
                run_record.RunRecorder(Path(json_path).resolve()), run_record.RECORDER_NAME
            )
    explore_items.configure(config)
    config.stash[SIGTERM_RESTORE_KEY] = termination.unwind_on_sigterm()


def pytest_unconfigure(config: pytest.Config) -> None:
    restore = config.stash.get(SIGTERM_RESTORE_KEY, None)
    if restore is not None:
        restore()


def pytest_report_header(config: pytest.Config) -> str | None:
    settings = config.stash.get(SETTINGS_KEY, None)
    if settings is None or settings == Settings():
        return None  # nothing to say when every setting is the default
    parts = [f"target={settings.target}"]
    if settings.known_bug is not None:
        parts.append(f"known-bug={settings.known_bug}")
    if settings.time_scale != 1.0:
        parts.append(f"time-scale={settings.time_scale:g}")
    if settings.report_dir is not None:
        parts.append(f"report={settings.report_dir}")
    if settings.default_within != Settings.default_within:
        parts.append(f"within={format_duration(settings.default_within)}")
    return "flrelia: " + ", ".join(parts)


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> ScenarioFile | None:
    return collect_file(file_path, parent)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, Any, None]:
    # Here rather than in pytest_collectreport: that hook gets neither the collector nor
    # the config, and only the collector says whether the error is a scenario file's.
    outcome = yield
    report: pytest.CollectReport = outcome.get_result()
    if report.failed and isinstance(collector, ScenarioFile):
        collector.config.stash[SCENARIO_COLLECT_ERRORS_KEY] += 1


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> None:
    """A bad scenario file does not stop the others: pytest's own loop would say
    "Interrupted: N errors during collection" and run nothing.  Any other collection
    error, ``-x``/``--maxfail`` reached, or ``--collect-only`` keep pytest's behaviour;
    the session still fails because of the errors."""
    config = session.config
    scenario_errors = config.stash.get(SCENARIO_COLLECT_ERRORS_KEY, 0)
    if (
        scenario_errors
        and session.testsfailed == scenario_errors
        and not session.shouldfail
        and not config.option.collectonly
    ):
        config.option.continue_on_collection_errors = True


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> bool | None:
    """pytest-timeout's deadline for an item that runs scenarios ends its run cleanly, with
    a report, instead of ``os._exit`` (thread method) or an exception anywhere (signal)."""
    if not isinstance(item, ScenarioItem) and "flrelia" not in getattr(item, "fixturenames", ()):
        return None
    others = item.config.pluginmanager.subset_hook_caller(
        "pytest_timeout_set_timer", remove_plugins=[sys.modules[__name__]]
    )
    return cutoff.set_timer(item, settings, others)


@pytest.fixture
def flrelia(request: pytest.FixtureRequest) -> Flrelia:
    """Run a scenario from this test: ``flrelia.run(sites=2, faults=[...], within="10s")``
    returns the verdict, the job's result and the timeline; ``run.check()`` raises the
    failure report.  ``@pytest.mark.flrelia(...)`` gives defaults for the keywords."""
    from pytest_flrelia.plugin.fixture import Flrelia  # noqa: PLC0415 (imports the runtime)

    # Contradicting timeouts are warned of in the caller's words when run() loads them; the
    # job's own warning would only repeat it.  pytest restores the filters after the test.
    warnings.filterwarnings("ignore", category=TimeoutConflictWarning)
    return Flrelia(
        request.node, request.config.stash[SETTINGS_KEY], request.config.stash[TARGETS_KEY]
    )
