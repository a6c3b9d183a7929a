"""Named sites and jobs (``job.site_names``, ``job.name``): the loader's rules, the
target's declaration, and real runs of the reference runtime with odd names.

A name must reach every place a launcher puts it (the process's environment, its
working directory, its timeline file, the failpoint scopes, every event's ``site``), so
the runs below check the events each named process recorded itself, not the config.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
from minilaunch.target import MiniTarget

from pytest_flrelia.contract import failpoints
from pytest_flrelia.contract.events import LaneKind, lane_of
from pytest_flrelia.contract.job import MAX_NAME_BYTES, JobConfig, name_problem
from pytest_flrelia.contract.target import Target
from pytest_flrelia.contract.timeline import Event, EventKind
from pytest_flrelia.errors import ScenarioError, ScenarioUnsupported
from pytest_flrelia.harness.runner import ScenarioOutcome, run_scenario
from pytest_flrelia.harness.settings import Settings
from pytest_flrelia.harness.support import why_unsupported
from pytest_flrelia.scenario.loader import Scenario, load_scenarios
from pytest_flrelia.targets.reference import ReferenceTarget

SPACES = "Jürgen Müller"
KANJI = "山田 太郎"
HOSTILE = "O'Brien, \"Smith\" & Co. [x=1]; $HOME %41 `id` #2"
LONG = ", ".join(["Ölçek Çağrı Şahinoğlu-Ünlü"] * 6)  # noqa: RUF001 (Turkish dotless i)
"""Over 150 characters and 200 bytes: longer than a Unix socket path may be."""
assert len(LONG) > 150 and len(LONG.encode()) <= MAX_NAME_BYTES


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "x.scenario.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _load(tmp_path: Path, text: str) -> Scenario:
    (scenario,) = load_scenarios(_file(tmp_path, text))
    return scenario


def _error(tmp_path: Path, text: str) -> ScenarioError:
    with pytest.raises(ScenarioError) as caught:
        load_scenarios(_file(tmp_path, text))
    return caught.value


def _names_job(names: str, extra: str = "") -> str:
    return f"name: n\njob:\n  sites: 2\n  site_names: {names}\n{extra}"


# -- the loader ----------------------------------------------------------------------


def test_names_load_and_faults_name_their_sites_by_them(tmp_path: Path) -> None:
    scenario = _load(
        tmp_path,
        f"name: n\njob:\n  site_names: [{json.dumps(SPACES)}, {json.dumps(KANJI)}]\n"
        f"  name: {json.dumps(HOSTILE)}\n"
        f"faults:\n  - {{fault: slow_start, site: {json.dumps(KANJI)}, delay: 100ms}}\n",
    )
    assert scenario.job.site_names() == [SPACES, KANJI]
    assert scenario.job.sites == 2  # defaults to the number of names
    assert scenario.job.name == HOSTILE
    assert [f.site for f in scenario.faults] == [KANJI]


def test_without_names_the_sites_are_site_n_as_before(tmp_path: Path) -> None:
    scenario = _load(tmp_path, "name: n\njob: {sites: 3}\n")
    assert scenario.job.site_names() == ["site-1", "site-2", "site-3"]
    assert not scenario.job.has_names and scenario.job.name is None


@pytest.mark.parametrize(
    ("text", "line", "key", "message"),
    [
        (_names_job('["a", "b", "c"]'), 4, "job.site_names",
         "3 site names for 2 sites: give one name per site"),
        (_names_job('["a", "a"]'), 4, "job.site_names", "duplicate value 'a'"),
        (_names_job('["a", ""]'), 4, "job.site_names[1]", "must not be empty"),
        (_names_job('["a", " b"]'), 4, "job.site_names[1]",
         "invalid site name ' b': a name must not start or end with whitespace"),
        (_names_job('["a", "b\\nc"]'), 4, "job.site_names[1]",
         "invalid site name 'b\\nc': a control character (U+000A) cannot be in a name"),
        (_names_job('["a", "b\\u0000"]'), 4, "job.site_names[1]",
         "a control character (U+0000) cannot be in a name"),
        (_names_job('["a", "x/y"]'), 4, "job.site_names[1]",
         "'/' cannot be in a name: a name is one directory of a workspace"),
        (_names_job('["a", ".."]'), 4, "job.site_names[1]", "'..' cannot be a name"),
        (_names_job(f'["a", "{"é" * 128}"]'), 4, "job.site_names[1]",
         "a name is at most 255 bytes of UTF-8 (one path component), this one is 256"),
        (_names_job("[a, 7]"), 4, "job.site_names[1]", "expected a string, got 7"),
        (_names_job('["a", "b"]', "faults:\n  - {fault: slow_start, site: c, delay: 1s}\n"),
         6, "faults[0].site", "site 'c' does not exist; this job has 'a', 'b'"),
        (_names_job('["a", "b"]', "  name: ' job'\n"), 5, "job.name",
         "invalid job name ' job': a name must not start or end with whitespace"),
        (_names_job('["a", "b"]', "  name: ''\n"), 5, "job.name", "must not be empty"),
    ],
    ids=["count", "duplicate", "empty", "leading-space", "newline", "nul", "slash", "dotdot",
         "too-long", "not-a-string", "fault-site", "job-name", "job-name-empty"],
)
def test_the_loader_refuses_bad_names_with_file_line_and_key(
    tmp_path: Path, text: str, line: int, key: str, message: str
) -> None:
    error = _error(tmp_path, text)
    assert (error.line, error.key_path) == (line, key), error.format()
    assert message in error.message, error.format()


def test_a_name_at_the_limit_loads_and_one_byte_more_does_not() -> None:
    assert name_problem("é" * 127 + "a") is None  # 255 bytes
    assert name_problem("é" * 128) is not None  # 256 bytes
    for allowed in (SPACES, KANJI, HOSTILE, LONG, "site-1", "100%", "a  b"):
        assert name_problem(allowed) is None, allowed


def test_a_fault_site_close_to_a_name_is_suggested(tmp_path: Path) -> None:
    fault = "faults:\n  - {fault: slow_start, site: alhpa, delay: 1s}\n"
    error = _error(tmp_path, _names_job('["alpha", "beta"]', fault))
    assert error.suggestion == "alpha" and set(error.valid) == {"alpha", "beta"}


def test_a_job_config_refuses_a_name_count_that_does_not_match() -> None:
    with pytest.raises(ValueError, match="1 site names for 2 sites"):
        JobConfig(sites=2, named_sites=("a",))


# -- the target's declaration --------------------------------------------------------


def test_a_target_that_does_not_declare_named_sites_skips_them(tmp_path: Path) -> None:
    named = _load(tmp_path, "name: n\njob: {site_names: [a b]}\n")
    info = dataclasses.replace(ReferenceTarget.info, named_sites=False)
    reason = why_unsupported(named, info, ())
    assert reason is not None and "does not declare named sites" in reason
    assert "job.site_names" in reason
    assert why_unsupported(named, ReferenceTarget.info, ()) is None
    plain = dataclasses.replace(named, job=JobConfig())
    assert why_unsupported(plain, info, ()) is None
    job_only = dataclasses.replace(named, job=JobConfig(name="nightly"))
    assert "job.name" in (why_unsupported(job_only, info, ()) or "")


def test_the_second_target_skips_a_named_scenario_and_runs_it_unnamed(tmp_path: Path) -> None:
    """minilaunch declares no named sites: the names are never dropped silently."""
    mini = MiniTarget()
    assert not mini.info.named_sites
    scenario = _load(tmp_path, "name: n\njob: {site_names: [a b], tensors: {count: 0}}\n")
    with pytest.raises(ScenarioUnsupported, match="does not declare named sites"):
        run_scenario(scenario, Settings(target="mini"), targets=lambda name: mini)
    plain = dataclasses.replace(scenario, job=dataclasses.replace(scenario.job, named_sites=()))
    run_scenario(plain, Settings(target="mini"), targets=lambda name: mini)


# -- the failpoint scopes ------------------------------------------------------------


@pytest.mark.parametrize("site", [SPACES, KANJI, HOSTILE, LONG, "site-1", "a]b;c=d,e"])
def test_a_failpoint_scope_carries_any_name(site: str) -> None:
    spec = f"x[site={failpoints.site_scope(site)},round=2]@crash#0=return;y=return"
    with failpoints.scoped(spec):
        assert failpoints.failpoint("x", site=site, round=2)
        assert not failpoints.failpoint("x", site=site + "x", round=2)
        assert not failpoints.failpoint("x", site=site.split(maxsplit=1)[0] + "?", round=2)
    assert failpoints.site_scope("site-1") == "site-1"  # written specs read as before


# -- real runs of the reference runtime ----------------------------------------------


def _run(tmp_path: Path, text: str, target: Target | None = None) -> ScenarioOutcome:
    scenario = _load(tmp_path, text)
    found = (lambda name: target) if target is not None else None
    return run_scenario(scenario, Settings(), targets=found)


def _by_lane(events: tuple[Event, ...], kind: LaneKind) -> dict[str, list[Event]]:
    out: dict[str, list[Event]] = {}
    for event in events:
        lane = lane_of(event.process)
        if lane is not None and lane.kind is kind and lane.site is not None:
            out.setdefault(lane.site, []).append(event)
    return out


def _yaml_list(names: list[str]) -> str:
    return "[" + ", ".join(json.dumps(n) for n in names) + "]"


@pytest.mark.parametrize(
    ("names", "job_name"),
    [([SPACES, KANJI], "nightly run"), ([HOSTILE, LONG], "夜の $HOME 'job'; [1]")],
    ids=["spaces-and-kanji", "hostile-and-long"],
)
def test_odd_names_reach_every_process_and_event(
    tmp_path: Path, names: list[str], job_name: str, no_leftover_children: None
) -> None:
    outcome = _run(
        tmp_path,
        f"name: n\njob:\n  site_names: {_yaml_list(names)}\n  name: {json.dumps(job_name)}\n"
        "  rounds: 2\n  tensors: {count: 2, size: 8KiB}\n"
        f"faults:\n  - {{fault: delayed_download, site: {json.dumps(names[1])}, round: 2, "
        "delay: 100ms}\n"
        f"  - {{fault: slow_start, site: {json.dumps(names[0])}, delay: 50ms}}\n"
        "expect: {outcome: success, within: 30s}\n",
    )
    assert outcome.result is not None and outcome.result.ok
    assert outcome.delivered == outcome.faults  # both site-scoped faults struck their site
    training = _by_lane(outcome.events, LaneKind.TRAINING)
    assert sorted(training) == sorted(names)  # every process says its own name
    for site, events in training.items():
        inits = [e for e in events if e.kind is EventKind.INIT]
        assert len(inits) == 2, site  # one process per round, each from its own env
        for init in inits:
            assert init.site == site and init.detail["job"] == job_name
            assert Path(str(init.detail["workdir"])).parts[-2:] == (job_name, site)
    client = _by_lane(outcome.events, LaneKind.CLIENT)
    assert sorted(client) == sorted(names)
    start = next(e for e in outcome.events if e.kind is EventKind.JOB_START)
    assert start.detail["name"] == job_name
    faults = [e for e in outcome.events if e.kind is EventKind.FAULT]
    assert {e.site for e in faults} == set(names)


def test_a_fatal_fault_on_a_named_site_names_it_in_the_error(
    tmp_path: Path, no_leftover_children: None
) -> None:
    outcome = _run(
        tmp_path,
        f"name: n\njob:\n  site_names: {_yaml_list([SPACES, HOSTILE])}\n"
        "  tensors: {count: 1, size: 8KiB}\n"
        f"faults:\n  - {{fault: crash, site: {json.dumps(HOSTILE)}, at: after_task_received}}\n"
        f"expect:\n  outcome: failure\n  error: {json.dumps(re.escape(HOSTILE) + ': training')}\n"
        "  within: 20s\n",
    )
    assert outcome.result is not None and not outcome.result.ok
    assert outcome.result.error is not None and HOSTILE in outcome.result.error
