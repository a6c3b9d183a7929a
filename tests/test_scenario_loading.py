"""Scenario files load into the job model, or fail with file:line, key, choices, close match."""

from __future__ import annotations

import json
import pickle
import re
import signal
import textwrap
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

from pytest_flrelia.contract.job import JobConfig, TensorSpec, Timeouts
from pytest_flrelia.scenario.build import expand
from pytest_flrelia.scenario.catalog import (
    CATALOG,
    INVARIANTS,
    ParamError,
    validate_params,
)
from pytest_flrelia.scenario.loader import (
    Expectation,
    FaultSpec,
    ScenarioError,
    ScenarioTimeoutWarning,
    default_invariants,
    load_scenarios,
    shipped_schema,
)
from pytest_flrelia.scenario.schema import build_schema, key_paths, render_schema
from pytest_flrelia.scenario.source import Document
from pytest_flrelia.scenario.validate import schema_error
from pytest_flrelia.targets.reference.variants import KNOWN_BUGS

ROOT = Path(__file__).resolve().parent.parent
BAD_SCENARIOS = Path(__file__).resolve().parent / "data" / "bad_scenarios"
SCHEMA_FILE = ROOT / "pytest_flrelia" / "scenario" / "scenario.schema.json"
DOCS = ROOT / "docs" / "scenarios.md"

SPEC_EXAMPLE = """\
name: early-sigterm-before-download          # unique, used as the test id
description: SIGTERM lands after the result is sent, before the server pulls tensors.
job:
  sites: 2                                   # default 1
  rounds: 3                                  # default 1
  launch_once: false                         # default false
  tensors: {count: 4, size: 1MiB}            # per site result; count 0 = no download
  timeouts: {download_complete: 5s, heartbeat: 1s, stop_wait: 5s}
faults:
  - fault: delayed_download
    site: site-1                             # default: every site
    round: 2                                 # default: every round
    delay: 500ms
  - fault: early_sigterm
    at: after_result_sent
    signal: SIGTERM                          # default SIGTERM
expect:
  outcome: failure                           # success | failure
  error: "failed to download from site-1"    # regex; with outcome failure
  within: 20s                                # wall-clock bound for the whole run
  invariants: [tensors_intact, no_orphans]   # default: all that apply
"""


def write(tmp_path: Path, text: str, name: str = "x.scenario.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load_error(path: Path) -> ScenarioError:
    with pytest.raises(ScenarioError) as excinfo:
        load_scenarios(path)
    return excinfo.value


# --- good files ---------------------------------------------------------------------


def test_spec_example_builds_the_job_model(tmp_path: Path) -> None:
    [scenario] = load_scenarios(write(tmp_path, SPEC_EXAMPLE))

    assert scenario.name == "early-sigterm-before-download"
    assert scenario.description.startswith("SIGTERM lands")
    assert scenario.line == 1
    assert scenario.job == JobConfig(
        sites=2,
        rounds=3,
        launch_once=False,
        tensors=TensorSpec(count=4, size_bytes=1024 * 1024, dtype="float64"),
        timeouts=Timeouts(
            **{**Timeouts.fast().__dict__, "download_complete": 5.0, "heartbeat": 1.0}
        ),
        download_retries=JobConfig.download_retries,
        chunk_bytes=JobConfig.chunk_bytes,
    )
    assert scenario.faults == (
        FaultSpec("delayed_download", "site-1", 2, {"delay": 0.5}, line=10),
        FaultSpec(
            "early_sigterm",
            None,
            None,
            {"at": "after_result_sent", "signal": signal.SIGTERM},
            line=14,
            index=1,
        ),
    )
    assert scenario.expect == Expectation(
        outcome="failure",
        error="failed to download from site-1",
        within=20.0,
        invariants=("tensors_intact", "no_orphans"),
    )
    assert scenario.target is None
    assert scenario.marks == ()
    assert scenario.catches == ()
    assert scenario.matrix_case == ()


def test_minimal_scenario_takes_every_default(tmp_path: Path) -> None:
    [scenario] = load_scenarios(write(tmp_path, "name: minimal\n"))

    assert scenario.job == JobConfig(timeouts=Timeouts.fast())
    assert scenario.faults == ()
    assert scenario.expect == Expectation(outcome="success", error=None, within=None, invariants=())
    assert "prompt_exit" in default_invariants("success")
    assert scenario.expect.within_or(30.0) == 30.0


def test_stop_wait_follows_download_complete_unless_set(tmp_path: Path) -> None:
    [only_gate] = load_scenarios(
        write(tmp_path, "name: a\njob: {timeouts: {download_complete: 2m}}\n", "a.scenario.yaml")
    )
    with pytest.warns(ScenarioTimeoutWarning, match="stop_wait .0ms. is shorter than"):
        [both] = load_scenarios(
            write(
                tmp_path,
                "name: b\njob: {timeouts: {download_complete: 2m, stop_wait: 0}}\n",
                "b.scenario.yaml",
            )
        )

    assert only_gate.job.timeouts.stop_wait == 120.0
    assert both.job.timeouts.download_complete == 120.0
    assert both.job.timeouts.stop_wait == 0.0


def test_a_list_file_yields_its_scenarios_in_order_with_their_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        - name: first
          job: {validate_rounds: [2, 1], rounds: 2}
        - name: second
          target: reference
          marks: [slow]
          catches: [sync-stop, validate-waits]
        """,
    )

    first, second = load_scenarios(path)

    assert (first.name, first.line, first.job.validate_rounds) == ("first", 1, (1, 2))
    assert (second.name, second.line, second.target) == ("second", 3, "reference")
    assert second.marks == ("slow",)
    assert second.catches == ("sync-stop", "validate-waits")
    assert first.path == second.path == path


def test_matrix_expands_into_one_scenario_per_combination(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        name: boundary
        job: {rounds: 2}
        faults:
          - fault: stale_peer_gone
            round: 2
        matrix:
          launch_once: [true, false]
          job.tensors.size: [1KiB, 2KiB]
        """,
    )

    scenarios = load_scenarios(path)

    assert [s.name for s in scenarios] == [
        "boundary[launch_once=true-job.tensors.size=1KiB]",
        "boundary[launch_once=true-job.tensors.size=2KiB]",
        "boundary[launch_once=false-job.tensors.size=1KiB]",
        "boundary[launch_once=false-job.tensors.size=2KiB]",
    ]
    assert [(s.job.launch_once, s.job.tensors.size_bytes) for s in scenarios] == [
        (True, 1024),
        (True, 2048),
        (False, 1024),
        (False, 2048),
    ]
    assert all(s.job.rounds == 2 and s.line == 1 for s in scenarios)
    assert scenarios[0].matrix_case == (("launch_once", True), ("job.tensors.size", "1KiB"))
    assert scenarios[0].faults[0].params == {"from_round": 1}


def test_an_error_in_one_matrix_case_points_at_the_case(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        name: grid
        matrix:
          job.timeouts.heartbeat:
            - 5s
            - 100ms
        """,
    )

    assert str(load_error(path)) == (
        f"{path}:5: job.timeouts.heartbeat: heartbeat (100ms) must be longer than "
        "heartbeat_interval (200ms), or every peer looks gone "
        "(matrix case grid[job.timeouts.heartbeat=100ms])"
    )


def test_merge_keys_and_anchors_are_read_like_plain_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        - name: base
          job: &job
            sites: 2
            rounds: 2
        - name: derived
          job:
            <<: *job
            rounds: 3
          faults:
            - fault: crash
              at: before_init
              site: site-2
              round: 3
        """,
    )

    base, derived = load_scenarios(path)

    assert (base.job.sites, base.job.rounds) == (2, 2)
    assert (derived.job.sites, derived.job.rounds) == (2, 3)
    assert derived.faults[0].applies_to("site-2", 3)
    assert not derived.faults[0].applies_to("site-1", 3)
    assert not derived.faults[0].applies_to("site-2", 2)


def test_merged_key_errors_point_at_the_anchor(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        - name: base
          job: &job
            sites: 0
        - name: derived
          job:
            <<: *job
        """,
    )

    assert str(load_error(path)) == f"{path}:3: [0].job.sites: must be >= 1, got 0"


def test_each_pass_refuses_what_only_it_can_see(tmp_path: Path) -> None:
    """The passes are separate modules: YAML (source), schema (validate), meaning (build).
    Each lets through what only a later one can judge, and refuses what it can."""
    path = tmp_path / "x.scenario.yaml"
    duplicate = "name: a\nname: b\n"
    unknown_key = "name: a\njob: {sitez: 2}\n"
    no_such_round = (
        "name: a\njob: {rounds: 2}\nfaults:\n  - {fault: crash, at: before_init, round: 3}\n"
    )

    with pytest.raises(ScenarioError, match="duplicate key 'name'; first at line 1"):
        Document.parse(path, duplicate)

    doc = Document.parse(path, unknown_key)
    assert isinstance(doc.data, dict)
    refused = schema_error(doc, doc.data, ())
    assert refused is not None
    assert (refused.line, refused.key_path) == (2, "job.sitez")
    assert refused.suggestion == "sites"

    doc = Document.parse(path, no_such_round)
    assert isinstance(doc.data, dict)
    assert doc.line_of(("faults", 0, "round")) == 4
    assert schema_error(doc, doc.data, ()) is None
    with pytest.raises(ScenarioError, match=r"round 3 does not exist; this job has rounds 1\.\.2"):
        expand(doc, doc.data, ())
    [scenario] = expand(Document.parse(path, "name: a\n"), {"name": "a"}, ())
    assert scenario.name == "a"


def test_expectation_matches_errors_with_search() -> None:
    expect = Expectation(outcome="failure", error=r"failed to download from site-\d")

    assert expect.error_matches("DownloadError: failed to download from site-2: no connection")
    assert not expect.error_matches("round 2 timed out")
    assert Expectation().error_matches("anything")


@pytest.mark.parametrize("fault", sorted(CATALOG))
def test_every_catalog_example_is_a_valid_fault_entry(tmp_path: Path, fault: str) -> None:
    entry = json.dumps(dict(CATALOG[fault].example))
    path = write(tmp_path, f"name: example\njob: {{sites: 2, rounds: 3}}\nfaults: [{entry}]\n")

    [scenario] = load_scenarios(path)

    assert scenario.faults[0].fault == fault
    assert set(scenario.faults[0].params) == set(CATALOG[fault].params)


def test_validate_params_fills_defaults_and_names_the_bad_key() -> None:
    assert validate_params("crash", {"at": "mid_download"}, "faults[0]") == {
        "at": "mid_download",
        "code": 1,
    }
    assert validate_params("heartbeat_loss", {}, "faults[0]") == {"duration": None}
    with pytest.raises(ParamError) as excinfo:
        validate_params("corrupt_chunk", {"times": 0}, "faults[0]")
    assert (excinfo.value.key, excinfo.value.reason) == ("times", "must be >= 1, got 0")


def test_default_invariants_follow_the_outcome() -> None:
    assert "clean_failure" not in default_invariants("success")
    assert "all_rounds_complete" in default_invariants("success")
    assert "clean_failure" in default_invariants("failure")
    assert "all_rounds_complete" not in default_invariants("failure")
    assert set(default_invariants("success")) | set(default_invariants("failure")) == set(
        INVARIANTS
    )


# --- bad files ----------------------------------------------------------------------

BAD_FILES = sorted(BAD_SCENARIOS.glob("*.scenario.yaml"))


def test_there_is_a_bad_file_for_every_kind_of_mistake() -> None:
    assert len(BAD_FILES) >= 20
    assert all(Path(f"{path}.expected").is_file() for path in BAD_FILES)


@pytest.mark.parametrize("path", BAD_FILES, ids=lambda p: p.name.removesuffix(".scenario.yaml"))
def test_bad_file_fails_with_its_expected_message(path: Path) -> None:
    expected = Path(f"{path}.expected").read_text(encoding="utf-8").rstrip("\n")

    error = load_error(path)

    assert error.format(path.name) == expected
    assert str(error).startswith(f"{path}")


def test_tensors_that_cannot_fit_in_memory_are_refused_with_the_arithmetic(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "name: huge\njob:\n  sites: 3\n  tensors: {count: 1000, size: 1GiB}\n")
    message = str(load_error(path))
    assert re.fullmatch(
        rf"{re.escape(str(path))}:4: job.tensors: 1000 tensors x 1GiB x \(3 sites \+ the "
        r"server's model\) = 4000GiB at least, more than the [\d.]+[KMG]iB of memory available "
        r"on this host \(the budget: psutil.virtual_memory\(\).available\); "
        r"use fewer or smaller tensors",
        message,
    ), message


def test_a_yaml_syntax_error_shows_line_column_and_a_caret_under_the_spot() -> None:
    error = load_error(BAD_SCENARIOS / "yaml_syntax.scenario.yaml")
    assert (error.line, error.column) == (2, 36)
    source, caret = error.format().splitlines()[1:]
    assert source == "  2 | description: the colon in this line: breaks the mapping"
    assert caret.index("^") == source.index(": breaks")


def test_the_caret_under_a_tab_indented_spot_copies_the_tabs(tmp_path: Path) -> None:
    path = write(tmp_path, 'name: x\ndescription: "a\n\t\tb\\q"\n')  # \q: no such escape
    error = load_error(path)
    *_, source, caret = error.format().splitlines()
    assert source == '  3 | \t\tb\\q"'
    assert caret == "    | \t\t  ^"  # under the q, after the two tabs, the b and the backslash


def test_scenario_error_renders_every_part() -> None:
    error = ScenarioError(
        Path("scenarios/x.scenario.yaml"),
        12,
        "faults[0].fault",
        "unknown fault 'delayed_downlod'",
        ["crash", "delayed_download"],
        "delayed_download",
    )

    assert str(error) == (
        "scenarios/x.scenario.yaml:12: faults[0].fault: unknown fault 'delayed_downlod'; "
        "valid: crash, delayed_download; did you mean 'delayed_download'?"
    )
    assert ScenarioError(Path("a.yaml"), None, "", "empty file").format() == "a.yaml: empty file"


def test_scenario_error_survives_pickling() -> None:
    error = ScenarioError(Path("a.yaml"), 3, "name", "bad", ["x"], "x")

    assert str(pickle.loads(pickle.dumps(error))) == str(error)


def test_undecodable_file_is_a_scenario_error(tmp_path: Path) -> None:
    path = tmp_path / "x.scenario.yaml"
    path.write_bytes(b"name: \xff\xfe\n")

    assert load_error(path).message.startswith("not UTF-8 text")


# --- schema and docs ----------------------------------------------------------------


def test_shipped_schema_is_the_generated_one() -> None:
    assert SCHEMA_FILE.read_text(encoding="utf-8") == render_schema(), (
        "regenerate: python -m pytest_flrelia.scenario.schema"
        " > pytest_flrelia/scenario/scenario.schema.json"
    )
    assert shipped_schema() == build_schema()


def test_shipped_schema_is_a_valid_draft_2020_12_schema() -> None:
    Draft202012Validator.check_schema(shipped_schema())


def test_schema_accepts_the_spec_example_and_a_list(tmp_path: Path) -> None:
    validator = Draft202012Validator(shipped_schema())
    data = yaml.safe_load(SPEC_EXAMPLE)

    assert list(validator.iter_errors(data)) == []
    assert list(validator.iter_errors([data, {"name": "other"}])) == []
    assert list(validator.iter_errors({"name": "x", "faults": [{"fault": "nope"}]})) != []


def test_schema_knows_every_fault_slug_and_invariant() -> None:
    defs = shipped_schema()["$defs"]
    scenario = defs["scenario"]["properties"]

    assert defs["fault"]["properties"]["fault"]["enum"] == sorted(CATALOG)
    pinned, plain = scenario["catches"]["anyOf"]
    assert pinned["propertyNames"]["enum"] == plain["items"]["enum"] == list(KNOWN_BUGS)
    assert pinned["additionalProperties"]["enum"] == [
        name for name in INVARIANTS if name not in ("within_bound", "faults_delivered")
    ]
    assert scenario["expect"]["properties"]["invariants"]["items"]["enum"] == list(INVARIANTS)


def _documented_rows() -> dict[str, list[str]]:
    """Key path -> table cells, from the docs' 'Keys' and 'Faults' sections."""
    rows: dict[str, list[str]] = {}
    section = ""
    for line in DOCS.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
        match = re.match(r"^\| `([^`]+)` \|(.*)\|$", line)
        if match and section in ("Keys", "Faults"):
            rows[match.group(1)] = [cell.strip() for cell in match.group(2).split("|")]
    return rows


def test_docs_list_exactly_the_schema_keys() -> None:
    documented = set(_documented_rows())
    in_schema = set(key_paths(shipped_schema()))

    assert sorted(in_schema - documented) == [], "keys missing from docs/scenarios.md"
    assert sorted(documented - in_schema) == [], "docs/scenarios.md lists keys the schema lacks"


def test_docs_show_the_schema_defaults() -> None:
    rows = _documented_rows()
    scenario = shipped_schema()["$defs"]["scenario"]
    for path, cells in rows.items():
        node = scenario
        for part in path.split("."):
            node = node.get("properties", {}).get(part, {})
        if "default" in node:
            default = node["default"]
            shown = json.dumps(default) if not isinstance(default, str) else default
            assert f"`{shown}`" in cells[1], f"{path}: docs default {cells[1]!r}, schema {shown}"


def test_docs_describe_every_fault_and_invariant() -> None:
    text = DOCS.read_text(encoding="utf-8")

    assert [f for f in CATALOG if f"\n### {f}\n" not in text] == []
    for name, invariant in INVARIANTS.items():
        applies = "both" if len(invariant.outcomes) == 2 else next(iter(invariant.outcomes))
        assert f"| {name} | {applies} |" in text
