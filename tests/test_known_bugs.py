"""The harness catches every known bug and passes the correct runtime (SPEC §3).

Each variant runs the shipped scenarios whose ``catches`` name it: each must
fail, for the runtime's fault (not because the harness broke), and with the
check its ``catches`` pins for the bug among the failures: a bug "caught" only
by ``within_bound`` on a slow host, or by the expectation, is not caught.
Every shipped scenario passes on the correct runtime.  ``docs/bug-zoo.md`` (written
by ``python -m pytest_flrelia.tools.zoo``) names every bug and every scenario.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_flrelia.contract.import_path import load as resolve
from pytest_flrelia.harness.runner import ScenarioFailure, run_scenario
from pytest_flrelia.harness.settings import Settings
from pytest_flrelia.judge.invariants import CHECKS
from pytest_flrelia.scenario.catalog import UNPINNABLE
from pytest_flrelia.scenario.loader import Scenario
from pytest_flrelia.targets.reference.variants import KNOWN_BUGS, runtime_for
from pytest_flrelia.tools.zoo import (
    CORRECT,
    Cell,
    Matrix,
    harness_failure,
    render,
    shipped_scenarios,
)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = shipped_scenarios(ROOT / "scenarios")
BUG_ZOO = ROOT / "docs" / "bug-zoo.md"
CHECK_NAMES = frozenset({"expectation", *CHECKS})

THREAD_DIES = pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
ESCAPING_BUGS = frozenset({"heartbeat-broken-pipe", "deferred-event-not-set"})
"""KB7 and KB8 let an exception escape a thread (heartbeat, deferred stop): that is
the bug under test, not the test's."""


def _variant(slug: str) -> object:
    return pytest.param(slug, id=slug, marks=[THREAD_DIES] if slug in ESCAPING_BUGS else [])


def _catching(slug: str) -> list[Scenario]:
    return [s for s in SCENARIOS if slug in s.catches]


@pytest.mark.parametrize("slug", [_variant(slug) for slug in KNOWN_BUGS])
def test_known_bug_fails_every_scenario_meant_to_catch_it_with_its_pinned_check(
    slug: str,
) -> None:
    scenarios = _catching(slug)
    assert scenarios, f"no shipped scenario lists {slug!r} in catches"
    for scenario in scenarios:
        pinned = scenario.pinned[slug]
        with pytest.raises(ScenarioFailure) as raised:
            run_scenario(scenario, Settings(known_bug=slug))
        failure = raised.value
        assert failure.verdict is not None, failure.report
        crash = harness_failure(failure.verdict)
        assert crash is None, f"{scenario.name}: {crash}\n{failure.report}"
        names = {check.name for check in failure.verdict.failures}
        assert names <= CHECK_NAMES, failure.report
        assert pinned in names, f"{scenario.name}: {pinned} did not fail\n{failure.report}"
        assert f"--flrelia-known-bug={slug}" in failure.report  # how to reproduce it


def test_every_shipped_catches_entry_pins_a_check_that_can_catch() -> None:
    """A plain slug list would let any failure count, within_bound on a slow host too."""
    for scenario in SCENARIOS:
        assert sorted(scenario.pinned) == sorted(scenario.catches), scenario.name
        assert not set(scenario.pinned.values()) & {*UNPINNABLE, "expectation"}, scenario.name


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_correct_runtime_passes_shipped_scenario(scenario: Scenario) -> None:
    try:
        outcome = run_scenario(scenario, Settings())
    except ScenarioFailure as failure:
        pytest.fail(failure.report, pytrace=False)
    assert not outcome.verdict.failures
    assert outcome.verdict.checks[0].name == "expectation"


def test_the_registry_is_the_twelve_bugs_in_spec_order_and_every_part_resolves() -> None:
    assert len(KNOWN_BUGS) == 12
    assert [bug.kb for bug in KNOWN_BUGS.values()] == [f"KB{n}" for n in range(1, 13)]
    assert all(bug.slug == slug for slug, bug in KNOWN_BUGS.items())
    correct = runtime_for(None)
    for slug, bug in KNOWN_BUGS.items():
        variant = bug.runtime()
        changed = {
            f.name
            for f in dataclasses.fields(variant)
            if getattr(variant, f.name) != getattr(correct, f.name)
        }
        assert changed == set(bug.parts), slug  # exactly the parts it names, each resolved
        assert bug.summary and "\n" not in bug.summary, slug
        for path in bug.parts.values():
            part = resolve(path)
            assert isinstance(part, type), path
            assert bug.kb in (part.__doc__ or ""), f"{path} does not say it is {bug.kb}"


def test_reading_the_registry_imports_no_runtime() -> None:
    """The loader, the settings and the plugin read the slugs at collection time: the
    registry adds no module of the runtime to what the settings import already."""
    code = (
        "import sys\n"
        "import pytest_flrelia.harness.settings\n"
        "before = set(sys.modules)\n"
        "from pytest_flrelia.targets.reference.variants import KNOWN_BUGS\n"
        "assert len(KNOWN_BUGS) == 12\n"
        "print(sorted(m for m in set(sys.modules) - before if m.startswith('reference_impl')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout


def test_every_known_bug_is_caught_by_some_shipped_scenario() -> None:
    missing = [slug for slug in KNOWN_BUGS if not _catching(slug)]
    assert not missing


def test_every_catches_entry_names_a_known_bug() -> None:
    unknown = {(s.name, slug) for s in SCENARIOS for slug in s.catches if slug not in KNOWN_BUGS}
    assert not unknown


def test_bug_zoo_page_lists_every_bug_and_every_shipped_scenario() -> None:
    """Adding a scenario or a bug without regenerating the page fails here."""
    text = BUG_ZOO.read_text(encoding="utf-8")
    for slug, bug in KNOWN_BUGS.items():
        assert re.search(rf"^\| {bug.kb} \| `{re.escape(slug)}` \|", text, re.MULTILINE), slug
    rows = re.findall(r"^\| `([^`]+)` \|", text, re.MULTILINE)
    assert rows == [s.name for s in SCENARIOS]
    assert "## Problems" not in text


def test_detection_time_is_the_wall_time_until_the_first_failure_in_file_order() -> None:
    first, second, third = SCENARIOS[:3]
    slug = "sync-stop"

    def cell(scenario: Scenario, variant: str, failed: bool, seconds: float) -> Cell:
        check = "no_premature_stop" if failed else None
        failed_checks = (check,) if check else ()
        return Cell(scenario.name, variant, failed, check, None, None, seconds, failed_checks)

    cells = [
        cell(first, CORRECT, False, 1.0),
        cell(second, CORRECT, True, 1.0),
        cell(third, CORRECT, False, 1.0),
        cell(first, slug, False, 1.5),
        cell(second, slug, True, 2.0),
        cell(third, slug, True, 0.25),
    ]
    matrix = Matrix(
        (first, second, third), (CORRECT, slug), {(c.scenario, c.variant): c for c in cells}
    )
    found = matrix.detection(slug)
    assert found.first is not None and found.first.scenario == second.name
    assert found.seconds_until_first == pytest.approx(3.5)
    assert found.fastest is not None and found.fastest.scenario == third.name
    assert found.caught_by == (second.name, third.name)
    assert [p.split(":")[0] for p in matrix.problems()] == [second.name]
    page = render(matrix, Path("scenarios"))
    assert f"| `{second.name}` | **FAILED** (`no_premature_stop`) |" in page
    assert "| KB1 | `sync-stop` | " + f"`{second.name}` | 3.5 s | `{third.name}` | 0.2 s |" in page
    assert "## Problems" in page


def test_a_variant_failing_without_its_pinned_check_is_a_zoo_problem() -> None:
    scenario = next(s for s in SCENARIOS if s.pinned.get("sync-stop") == "no_premature_stop")
    slug = "sync-stop"

    def matrix(*failed_checks: str) -> Matrix:
        cells = [
            Cell(scenario.name, CORRECT, False, None, None, None, 1.0),
            Cell(scenario.name, slug, True, failed_checks[0], None, None, 1.0, failed_checks),
        ]
        return Matrix((scenario,), (CORRECT, slug), {(c.scenario, c.variant): c for c in cells})

    assert matrix("all_rounds_complete", "no_premature_stop").problems() == []
    [problem] = matrix("within_bound", "expectation").problems()
    assert problem.startswith(f"{slug}: not caught")
    assert f"{scenario.name} (no_premature_stop)" in problem
