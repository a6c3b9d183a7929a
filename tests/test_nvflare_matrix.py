"""The version matrix tool, with the reference target's known-bug variants standing in
for versions (each "venv" is this interpreter, the variant an extra pytest argument):
the page and its pin are written from real runs, a check of a version as pinned passes,
and a check against a pin that differs fails naming the cell."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_flrelia.tools import nvflare_matrix
from pytest_flrelia.tools.nvflare_matrix import Matrix, cell_of, differences, render

PULL = """\
- name: pull-late
  job:
    sites: 1
    rounds: 1
    tensors: {count: 1, size: 16KiB}
  faults:
    - {fault: delayed_download, delay: 300ms}
  expect: {outcome: success, within: 10s}
- name: never-runs
  marks: [skip]
  expect: {outcome: success}
"""


def _entry(name: str, outcome: str, **run: Any) -> dict[str, Any]:
    return {
        "name": name, "file": f"/x/scenarios/d/{name}.scenario.yaml", "outcome": outcome,
        "reason": run.pop("reason", None), "run": run or None,
    }


ISSUE = {
    "check": "bounded_stop", "reason": "the stop never escalates", "versions": ">=2.7.1,<2.9",
    "anchor": "docs/nvflare.md#kb12-stop-never-escalates", "details": "log: `stop_task ...`",
}


def _rc13(stubborn: dict[str, Any]) -> list[dict[str, Any]]:
    """A run of 2.7.2rc13 whose ``stubborn`` item gave ``stubborn``."""
    return [
        _entry("late-pull", "failed", leading_check="no_premature_stop"),
        stubborn,
        _entry("corrupt", "skipped", reason="target 'nvflare' cannot deliver corrupt_chunk"),
    ]


def _matrix() -> Matrix:
    matrix = Matrix(["2.7.2rc13", "2.7.2"])
    stubborn = _entry("stubborn", "xfailed", leading_check="bounded_stop", known_issue=ISSUE)
    matrix.add("2.7.2rc13", _rc13(stubborn), 100.0)
    matrix.add(
        "2.7.2",
        [
            _entry("late-pull", "passed", leading_check=None),
            _entry("stubborn", "xpassed-strict", passed=True, known_issue=ISSUE),
            _entry("corrupt", "skipped", reason="target 'nvflare' cannot deliver corrupt_chunk"),
        ],
        90.0,
    )
    return matrix


def test_the_page_shows_every_cell_the_known_issues_and_the_skip_reasons() -> None:
    page = render(_matrix(), Path("scenarios"), "nvflare", "nvflare-matrix.json")

    assert "| `late-pull` | caught (`no_premature_stop`) | passed |" in page
    xpass = "**XPASS** (fixed: remove the known issue)"
    assert f"| `stubborn` | xfail (`bounded_stop`) | {xpass} |" in page
    assert '<a id="kb12-stop-never-escalates"></a>' in page
    assert "reproduced here on 2.7.2rc13; **no longer reproduces on 2.7.2**" in page
    assert "`pytest 'scenarios/d/stubborn.scenario.yaml::stubborn' --flrelia-target=nvflare`" in (
        page
    )
    assert "| target 'nvflare' cannot deliver corrupt_chunk | 2.7.2rc13, 2.7.2 |" in page
    assert "[nvflare-wiring.md](nvflare-wiring.md)" in page
    assert "[nvflare-faults.md](nvflare-faults.md)" in page


def test_a_cell_that_varies_between_runs_is_pinned_with_every_outcome_and_shown_with_counts(
) -> None:
    matrix = _matrix()
    stubborn = _entry("stubborn", "failed", leading_check="no_premature_stop", known_issue=ISSUE)
    matrix.add("2.7.2rc13", _rc13(stubborn), 110.0)
    pin = matrix.pin("nvflare")

    assert pin["format"] == 2
    both = ["xfail:bounded_stop", "caught:no_premature_stop"]
    assert pin["cells"]["stubborn"]["2.7.2rc13"] == both
    assert pin["cells"]["late-pull"]["2.7.2rc13"] == "caught:no_premature_stop"
    assert differences(pin, matrix, "2.7.2rc13") == []

    page = render(matrix, Path("scenarios"), "nvflare", "nvflare-matrix.json")
    assert (
        "| `stubborn` | xfail (`bounded_stop`) 1/2 or caught (`no_premature_stop`) 1/2 |"
        in page
    )
    counted = "xfail:bounded_stop (1/2), caught:no_premature_stop (1/2)"
    assert f"| `stubborn` | 2.7.2rc13 | {counted} |" in page
    assert "Runs behind this page: 2.7.2rc13 2, 2.7.2 1." in page
    assert "2.7.2rc13 100-110 s over 2 runs" in page

    # a later run with an outcome no run gave before is a difference, named with the choices
    again = Matrix(["2.7.2rc13"])
    again.add("2.7.2rc13", [_entry("stubborn", "passed")], 90.0)
    assert differences(pin, again, "2.7.2rc13") == [
        "corrupt on 2.7.2rc13: pinned skipped, got nothing (the item is gone)",
        "late-pull on 2.7.2rc13: pinned caught:no_premature_stop, got nothing (the item is gone)",
        "stubborn on 2.7.2rc13: pinned xfail:bounded_stop or caught:no_premature_stop, got pass",
    ]


def test_items_repeated_in_another_run_add_to_their_outcomes_not_to_the_walls() -> None:
    assert nvflare_matrix.repeated_item("stubborn[7-12]") == "stubborn"
    assert nvflare_matrix.repeated_item("crash[launch_once=true-3-12]") == "crash[launch_once=true]"
    assert nvflare_matrix.repeated_item("crash[launch_once=true]") == "crash[launch_once=true]"

    matrix = _matrix()
    repeated = [
        _entry("stubborn[1-3]", "xfailed", leading_check="bounded_stop", known_issue=ISSUE),
        _entry("stubborn[2-3]", "failed", leading_check="no_premature_stop"),
        _entry("stubborn[3-3]", "xfailed", leading_check="bounded_stop", known_issue=ISSUE),
        _entry("not-in-the-suite[1-3]", "passed"),
    ]
    assert matrix.observe("2.7.2rc13", repeated) == 3
    assert matrix.outcomes("stubborn", "2.7.2rc13") == [
        ("xfail:bounded_stop", 3),
        ("caught:no_premature_stop", 1),
    ]
    assert matrix.seconds["2.7.2rc13"] == [100.0]
    assert "not-in-the-suite" not in matrix.items
    page = render(matrix, Path("scenarios"), "nvflare", "nvflare-matrix.json")
    assert "Runs behind this page: 2.7.2rc13 1 (and 3 item runs observed), 2.7.2 1." in page


def test_a_pin_of_the_first_format_names_one_outcome_per_cell() -> None:
    pin = {"format": 1, "versions": ["2.7.2"], "cells": {"late-pull": {"2.7.2": "pass"}}}
    matrix = Matrix(["2.7.2"])
    matrix.add("2.7.2", [_entry("late-pull", "passed")], 1.0)
    assert differences(pin, matrix, "2.7.2") == []
    assert nvflare_matrix.accepted("pass") == ["pass"]
    assert nvflare_matrix.accepted(None) == []


def test_a_page_with_no_varying_cell_says_so() -> None:
    page = render(_matrix(), Path("scenarios"), "nvflare", "nvflare-matrix.json")
    assert "None: every cell gave the same outcome in every run." in page


def test_a_failure_without_a_leading_check_is_a_harness_error_not_a_catch() -> None:
    assert cell_of(_entry("x", "failed"), "v").kind == nvflare_matrix.ERROR


def test_the_check_names_every_cell_unlike_the_pin() -> None:
    matrix = _matrix()
    pin = matrix.pin("nvflare")
    assert differences(pin, matrix, "2.7.2") == []

    pin["cells"]["late-pull"]["2.7.2"] = "caught:no_premature_stop"
    pin["cells"]["gone"] = {"2.7.2": "pass"}
    del pin["cells"]["corrupt"]
    assert differences(pin, matrix, "2.7.2") == [
        "corrupt on 2.7.2: pinned nothing (a new item), got skipped "
        "(target 'nvflare' cannot deliver corrupt_chunk)",
        "gone on 2.7.2: pinned pass, got nothing (the item is gone)",
        "late-pull on 2.7.2: pinned caught:no_premature_stop, got pass",
    ]
    assert differences(pin, matrix, "2.8.3") == [
        "2.8.3: not a version of the pin (2.7.2rc13, 2.7.2)"
    ]


RACE = {
    "name": "F5", "reason": "the monitor takes an old exit for the current task's",
    "anchor": "docs/nvflare-faults.md#f5-monitor", "versions": ">=2.7.2,<2.9",
    "details": "`_monitor_launcher` pauses, then tests the event.",
    "evidence": "site-2: round 2's pipe handler h2.4 was paused at +6741.2ms",
}


def test_a_known_race_is_accepted_on_any_cell_never_pinned_and_listed_with_its_hits() -> None:
    matrix = _matrix()
    pin = matrix.pin("nvflare")
    hit = _entry("late-pull", "xfailed", leading_check="all_rounds_complete", known_race=RACE)
    assert cell_of(hit, "2.7.2").kind == nvflare_matrix.RACE
    assert cell_of(hit, "2.7.2").pinned == "race:F5"

    # a CI run of 2.7.2 whose late-pull the race failed: as pinned (late-pull: pass)
    ci = Matrix(["2.7.2"])
    ci.add("2.7.2", [hit, _entry("stubborn", "xpassed-strict", passed=True, known_issue=ISSUE),
                     _entry("corrupt", "skipped", reason="target 'nvflare' cannot deliver "
                            "corrupt_chunk")], 95.0)
    assert differences(pin, ci, "2.7.2") == []
    # the same failure without the race's evidence is a difference
    plain = Matrix(["2.7.2"])
    plain.add("2.7.2", [_entry("late-pull", "failed", leading_check="all_rounds_complete")], 1.0)
    assert "late-pull on 2.7.2: pinned pass, got caught:all_rounds_complete" in differences(
        pin, plain, "2.7.2")

    matrix.add("2.7.2", [hit], 93.0)
    assert matrix.pin("nvflare")["cells"]["late-pull"]["2.7.2"] == "pass"  # never pinned
    page = render(matrix, Path("scenarios"), "nvflare", "nvflare-matrix.json")
    assert "| `late-pull` | caught (`no_premature_stop`) | passed 1/2 or known race " \
        "[F5](#f5-monitor) 1/2 |" in page
    assert "## Known races" in page
    assert '<a id="f5-monitor"></a>' in page
    assert "- declared for versions `>=2.7.2,<2.9`; hit in these runs: `late-pull` on 2.7.2 1/2" \
        in page
    assert f"- the evidence of one hit: {RACE['evidence']}" in page
    assert "None: every cell gave the same outcome in every run." in page  # a race is no variance


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_write_then_check_with_variants_standing_in_for_versions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    (scenarios / "pull.scenario.yaml").write_text(PULL)
    page = tmp_path / "docs" / "stand-in.md"
    common = [
        "--scenarios", str(scenarios), "--target", "reference", "--jobs", "1",
        "--venv", f"correct={sys.executable}", "--venv", f"sync-stop={sys.executable}",
        "--extra", "sync-stop=--flrelia-known-bug=sync-stop",
    ]  # fmt: skip

    keep = tmp_path / "keep"
    assert nvflare_matrix.main([*common, "--write", str(page), "--keep", str(keep)]) == 0
    written = (tmp_path / "docs" / "stand-in-matrix.json").read_text()

    # the page rebuilt from the kept records runs nothing: the "venvs" do not even exist
    gone = tmp_path / "no-such-venv"
    reused = [
        "--scenarios", str(scenarios), "--target", "reference", "--jobs", "1",
        "--venv", f"correct={gone}", "--venv", f"sync-stop={gone}", "--keep", str(keep),
        "--reuse", "correct", "--reuse", "sync-stop", "--write", str(page),
    ]  # fmt: skip
    assert nvflare_matrix.main(reused) == 0
    assert (tmp_path / "docs" / "stand-in-matrix.json").read_text() == written
    # another run's record of a version adds its items' outcomes (the same here)
    observed = keep / "sync-stop-reference-n1.json"
    assert nvflare_matrix.main([*reused, "--observe", f"sync-stop={observed}"]) == 0
    assert (tmp_path / "docs" / "stand-in-matrix.json").read_text() == written
    assert "sync-stop 1 (and 2 item runs observed)" in page.read_text()
    assert "| `pull-late` | passed | caught (`no_premature_stop`) |" in page.read_text()
    # one more run of one version, added to the kept one: the same outcome, two samples
    more = [
        "--scenarios", str(scenarios), "--target", "reference", "--jobs", "1",
        "--venv", f"correct={sys.executable}", "--venv", f"sync-stop={gone}",
        "--keep", str(keep), "--reuse", "sync-stop", "--accumulate", "--write", str(page),
    ]  # fmt: skip
    assert nvflare_matrix.main(more) == 0
    assert (keep / "correct-reference-n1.run2.json").exists()
    assert (tmp_path / "docs" / "stand-in-matrix.json").read_text() == written
    assert "Runs behind this page: correct 2, sync-stop 1." in page.read_text()
    # without --accumulate a run replaces what was kept
    assert nvflare_matrix.main([a for a in more if a != "--accumulate"]) == 0
    assert not (keep / "correct-reference-n1.run2.json").exists()
    assert "Runs behind this page: correct 1, sync-stop 1." in page.read_text()
    with pytest.raises(SystemExit, match="no kept record"):
        nvflare_matrix.main(["--venv", f"other={gone}", "--keep", str(keep), "--reuse", "other",
                             "--target", "reference", "--write", str(page)])

    text = page.read_text()
    assert "| `pull-late` | passed | caught (`no_premature_stop`) |" in text
    assert "| `never-runs` | skipped | skipped |" in text
    pin = json.loads((tmp_path / "docs" / "stand-in-matrix.json").read_text())
    assert pin["cells"]["pull-late"] == {"correct": "pass", "sync-stop": "caught:no_premature_stop"}

    assert nvflare_matrix.main([*common, "--write", str(page), "--check", "sync-stop"]) == 0
    pin["cells"]["pull-late"]["sync-stop"] = "pass"
    (tmp_path / "docs" / "stand-in-matrix.json").write_text(json.dumps(pin))
    capsys.readouterr()

    assert nvflare_matrix.main([*common, "--write", str(page), "--check", "sync-stop"]) == 1
    err = capsys.readouterr().err
    assert "differs: pull-late on sync-stop: pinned pass, got caught:no_premature_stop" in err
