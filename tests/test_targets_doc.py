"""docs/targets.md's worked example is a test: its code blocks are the files of
tests/flrelia_example, and that target passes a shipped scenario."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from _minilaunch_install import ROOT

from pytest_flrelia.harness.runner import run_scenario
from pytest_flrelia.harness.settings import Settings
from pytest_flrelia.scenario.loader import load_scenarios

DOC = ROOT / "docs" / "targets.md"
EXAMPLE = ROOT / "tests" / "flrelia_example"
QUOTED = re.compile(r"<!-- file: (\S+) -->\n```[a-z]*\n(.*?)```\n", re.DOTALL)


def example_files() -> dict[str, str]:
    return {
        str(p.relative_to(ROOT)): p.read_text()
        for p in sorted(EXAMPLE.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def stale_quotes(doc: str, files: dict[str, str]) -> list[str]:
    """Each example file the doc does not quote verbatim, or quotes but lacks."""
    quoted = dict(QUOTED.findall(doc))
    problems = [f"{path}: not quoted" for path in sorted(set(files) - set(quoted))]
    problems += [f"{path}: quoted, no such file" for path in sorted(set(quoted) - set(files))]
    problems += [
        f"{path}: quoted out of date"
        for path in sorted(set(files) & set(quoted))
        if quoted[path] != files[path]
    ]
    return problems


def test_the_doc_quotes_every_file_of_the_example_verbatim() -> None:
    assert stale_quotes(DOC.read_text(), example_files()) == []


def test_a_drifted_or_missing_quote_is_caught() -> None:
    doc, files = DOC.read_text(), example_files()
    path = "tests/flrelia_example/target.py"
    drifted = {**files, path: files[path].replace("always reaped", "reaped", 1)}
    assert stale_quotes(doc, drifted) == [f"{path}: quoted out of date"]
    extra = {**files, "tests/flrelia_example/extra.py": ""}
    assert stale_quotes(doc, extra) == ["tests/flrelia_example/extra.py: not quoted"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("file", "name"),
    [("pipe_handler/status-events.scenario.yaml", "fresh-handler-after-status-event")],
)
def test_the_example_target_passes_a_shipped_scenario(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_leftover_children: None,
    file: str, name: str,
) -> None:
    info = tmp_path / "flrelia_example-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: flrelia_example\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[flrelia.targets]\nexample = flrelia_example.target:ExampleTarget\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(EXAMPLE.parent))
    scenario = next(s for s in load_scenarios(ROOT / "scenarios" / file) if s.name == name)

    outcome = run_scenario(scenario, Settings(target="example"))

    judged = {c.name for c in outcome.verdict.checks if c.applicable}
    assert {"all_rounds_complete", "tensors_intact", "no_premature_stop", "process_per_round",
            "prompt_exit", "no_orphans"} <= judged, outcome.verdict.lines()
