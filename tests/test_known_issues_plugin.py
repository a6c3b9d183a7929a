"""Known issues end to end, and the ``--flrelia-json`` run record.

The target is the reference one under another name that declares KB12 (the stop
never escalates, variant ``child-only-sigterm``) as a known issue of versions
``>=2.0``: the real bug, in real processes.  All three ways a known issue can go are
shown: it reproduces with its check leading (XFAIL), it does not reproduce (the gate
fails: remove it), and the item fails with another leading check (a plain failure).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _known_targets import import_this_checkout, stubborn_scenario

from pytest_flrelia.plugin import run_record

PLUGIN_ARGS = ("-p", "no:flrelia", "-p", "pytest_flrelia.plugin")
QUIET_ARGS = ("-p", "no:hypothesispytest", "-p", "no:faker", "-p", "no:cacheprovider")
INNER_TIMEOUT = 180.0

CONFTEST = '''
import dataclasses

from pytest_flrelia.contract.target import KnownIssue
from pytest_flrelia.targets.reference import ReferenceTarget

LEAD = "{lead}"


class KnownRef:
    """The reference target, declaring KB12 as a known issue of the variant that has it."""

    def __init__(self):
        self._ref = ReferenceTarget()
        self.info = dataclasses.replace(
            self._ref.info,
            name="known-ref",
            version="known-ref 2.1",
            known_issues=(
                KnownIssue(
                    scenario="stubborn-one-round",
                    check=LEAD,
                    reason="the stop signals the child only and waits forever",
                    anchor="docs/nvflare.md#kb12",
                    versions=">=2.0",
                    params={{"launch_once": False}},
                    variants=frozenset({{"child-only-sigterm"}}),
                ),
            ),
        )

    def run(self, job, faults, context):
        return self._ref.run(job, faults, context)


def pytest_flrelia_make_target(name, config):
    return KnownRef() if name == "known-ref" else None
'''
STUBBORN = stubborn_scenario(both_modes=True)
SKIPPED = """\
name: always-skipped
marks: [skip]
expect: {outcome: success}
"""
FALSE = "stubborn-one-round[launch_once=false]"


def _inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, lead: str) -> None:
    import_this_checkout(monkeypatch)
    pytester.makeconftest(CONFTEST.format(lead=lead))
    (pytester.path / "stubborn.scenario.yaml").write_text(STUBBORN)


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        *PLUGIN_ARGS, *QUIET_ARGS, "--flrelia-target=known-ref", *args, timeout=INNER_TIMEOUT
    )


def _entries(path: Path) -> dict[str, dict[str, object]]:
    return {str(e["name"]): e for e in run_record.load(path)}


@pytest.mark.slow
def test_a_known_issue_that_reproduces_with_its_check_leading_is_an_xfail(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    _inner(pytester, monkeypatch, "bounded_stop")
    (pytester.path / "skipped.scenario.yaml").write_text(SKIPPED)

    result = _run(
        pytester, "--flrelia-known-bug=child-only-sigterm", "-rxs", "-n", "2",
        "--flrelia-json=out/run.json",
    )

    # launch_once=true is not the known issue's item: it fails plainly, with the same bug
    result.assert_outcomes(xfailed=1, failed=1, skipped=1)
    result.stdout.fnmatch_lines(
        [
            "XFAIL *stubborn-one-round?launch_once=false? - known issue (bounded_stop): "
            "the stop signals the child only and waits forever [[]docs/nvflare.md#kb12[]]",
        ]
    )
    entries = _entries(pytester.path / "out" / "run.json")
    xfailed = entries[FALSE]
    assert xfailed["outcome"] == "xfailed"
    assert xfailed["scenario"] == "stubborn-one-round"
    assert xfailed["params"] == {"launch_once": False}
    assert xfailed["target"] == "known-ref"
    assert xfailed["version"] == "known-ref 2.1"
    assert xfailed["variant"] == "child-only-sigterm"
    run = xfailed["run"]
    assert isinstance(run, dict)
    assert run["leading_check"] == "bounded_stop"
    assert run["faults"] == run["delivered"] and len(run["faults"]) == 2
    plain = entries["stubborn-one-round[launch_once=true]"]
    assert plain["outcome"] == "failed" and plain["reason"] == "bounded_stop"
    skipped = entries["always-skipped"]
    assert skipped["outcome"] == "skipped" and skipped["run"] is None
    assert skipped["file"] == str(pytester.path / "skipped.scenario.yaml")


@pytest.mark.slow
def test_a_known_issue_that_no_longer_reproduces_fails_the_gate(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    _inner(pytester, monkeypatch, "bounded_stop")
    # the correct runtime under the same variant name would be the fixed release: here the
    # issue names the correct runtime's variant-less run by dropping the variant filter
    conftest = pytester.path / "conftest.py"
    conftest.write_text(
        conftest.read_text().replace('variants=frozenset({"child-only-sigterm"}),', "")
    )

    result = _run(pytester, f"stubborn.scenario.yaml::{FALSE}", "--flrelia-json=run.json")

    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*known issue stubborn-one-round (bounded_stop: the stop signals the child only "
            "and waits forever) no longer reproduces on known-ref 2.1: remove it from the "
            "target's known_issues (and its row, docs/nvflare.md#kb12)",
        ]
    )
    (entry,) = run_record.load(pytester.path / "run.json")
    assert entry["outcome"] == "xpassed-strict"


@pytest.mark.slow
def test_a_known_issue_item_failing_with_another_leading_check_is_a_plain_failure(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    _inner(pytester, monkeypatch, "prompt_exit")

    result = _run(
        pytester, f"stubborn.scenario.yaml::{FALSE}", "--flrelia-known-bug=child-only-sigterm",
        "--flrelia-json=run.json",
    )

    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "known issue stubborn-one-round expects prompt_exit to lead the failure; "
            "bounded_stop led it: this is a different failure",
        ]
    )
    (entry,) = run_record.load(pytester.path / "run.json")
    assert entry["outcome"] == "failed" and entry["reason"] == "bounded_stop"


def test_a_record_of_another_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"format": 0, "items": []}))
    with pytest.raises(ValueError, match="format 0"):
        run_record.load(path)
