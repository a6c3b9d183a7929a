"""Generated site and job names: valid, replayable from the seed, drawn only for a target
that declares ``named_sites``, shrunk away when a failure does not need them, and able to
find a launcher that splits a site name on spaces."""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, find, settings

from pytest_flrelia.contract.job import default_site_names, name_problem
from pytest_flrelia.errors import ScenarioFailure
from pytest_flrelia.explore.driver import draw_schedule
from pytest_flrelia.explore.names import KINDS, LOCALES, make_names
from pytest_flrelia.explore.run import render
from pytest_flrelia.explore.strategy import Schedule, schedules
from pytest_flrelia.harness.runner import run_scenario
from pytest_flrelia.harness.settings import Settings
from pytest_flrelia.scenario.loader import load_scenarios
from pytest_flrelia.targets.reference import ReferenceTarget

INFO = ReferenceTarget.info
UNNAMED = dataclasses.replace(INFO, named_sites=False)
REPLAY_SEED = 3
REPLAY_COUNT = 40
FIND = settings(max_examples=3000, database=None, suppress_health_check=list(HealthCheck))

DRAW_SCRIPT = """\
import json, sys
from pytest_flrelia.explore.driver import draw_schedule
from pytest_flrelia.targets.reference import ReferenceTarget
seed, count = int(sys.argv[1]), int(sys.argv[2])
print(json.dumps([draw_schedule(ReferenceTarget.info, seed, i).mapping for i in range(count)]))
"""


def _names(mapping: dict[str, Any]) -> list[str]:
    job = mapping["job"]
    return [*job.get("site_names", []), *([job["name"]] if "name" in job else [])]


def _drawn(seed: int, count: int) -> list[dict[str, Any]]:
    return [draw_schedule(INFO, seed, i).mapping for i in range(count)]


def test_made_names_are_valid_unique_and_a_function_of_the_draw() -> None:
    defaults = [*default_site_names(3), "job"]
    for seed, locale in itertools.product(range(2), LOCALES):  # every locale and kind
        for kinds in itertools.combinations_with_replacement(KINDS, len(defaults)):
            names = make_names(seed, locale, kinds, defaults)
            assert all(name_problem(n) is None for n in names), names
            assert len(set(names)) == len(names), names
            assert make_names(seed, locale, kinds, defaults) == names  # pure


def test_replaying_a_seed_in_another_process_gives_the_same_names() -> None:
    """What ``--flrelia-explore-seed`` relies on: a fresh interpreter (its own faker, its
    own hash seed) draws the same schedules, odd names included."""
    here = _drawn(REPLAY_SEED, REPLAY_COUNT)
    names = [n for mapping in here for n in _names(mapping)]
    assert any(" " in n for n in names), names
    assert any(not n.isascii() for n in names), names
    assert any(len(n) >= 100 for n in names), names
    done = subprocess.run(
        [sys.executable, "-c", DRAW_SCRIPT, str(REPLAY_SEED), str(REPLAY_COUNT)],
        capture_output=True, text=True, timeout=120, check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": "/usr/bin:/bin"},
    )
    assert json.loads(done.stdout) == json.loads(json.dumps(here))
    assert _drawn(REPLAY_SEED + 1, REPLAY_COUNT) != here  # another seed, other schedules


def test_every_named_schedule_loads_and_its_faults_and_error_follow_the_names(
    tmp_path: Path,
) -> None:
    named = [m for m in _drawn(REPLAY_SEED, REPLAY_COUNT) if "site_names" in m["job"]]
    assert len(named) >= 5
    for index, mapping in enumerate(named):
        path = tmp_path / f"s{index}.scenario.yaml"
        path.write_text(render(Schedule(mapping, 0).named(f"s{index}")), encoding="utf-8")
        (scenario,) = load_scenarios(path)
        assert scenario.job.site_names() == mapping["job"]["site_names"]
        assert scenario.job.name == mapping["job"].get("name")
        assert {f.site for f in scenario.faults} <= {None, *scenario.job.site_names()}
        error = scenario.expect.error
        if error is not None:  # the struck site, by its new name, escaped
            assert any(re.escape(site) in error for site in scenario.job.site_names()), error


def _renamed_back(mapping: dict[str, Any]) -> dict[str, Any]:
    """``mapping`` with its drawn names replaced by the defaults they renamed."""
    out = json.loads(json.dumps(mapping))
    names = out["job"].pop("site_names", [])
    out["job"].pop("name", None)
    back = dict(zip(names, default_site_names(len(names)), strict=True))
    for fault in out.get("faults", []):
        if "site" in fault:
            fault["site"] = back.get(fault["site"], fault["site"])
    error = out["expect"].get("error")
    for name, default in back.items():
        if error is not None and re.escape(name) in error:
            out["expect"]["error"] = error.replace(re.escape(name), re.escape(default))
    return out


def test_names_are_drawn_last_and_only_for_a_target_that_declares_them() -> None:
    """A target without ``named_sites`` draws the schedules it drew before names existed;
    with them, the rest of a schedule is the same, its sites renamed."""
    renamed = 0
    for index in range(REPLAY_COUNT):
        plain = draw_schedule(UNNAMED, REPLAY_SEED, index).mapping
        assert not _names(plain)
        named = draw_schedule(INFO, REPLAY_SEED, index).mapping
        renamed += bool(_names(named))
        assert _renamed_back(named) == json.loads(json.dumps(plain)), index
    assert renamed >= 5


def test_a_failure_that_does_not_need_names_shrinks_to_the_default_ones() -> None:
    minimal = find(
        schedules(INFO),
        lambda s: any(f["fault"] == "stuck_exit" for f in s.mapping.get("faults", [])),
        settings=FIND,
    )
    assert not _names(minimal.mapping), minimal.mapping


def test_a_failure_that_needs_a_space_shrinks_to_one_plain_spaced_name() -> None:
    minimal = find(
        schedules(INFO),
        lambda s: any(" " in n for n in s.mapping["job"].get("site_names", [])),
        settings=FIND,
    )
    job = minimal.mapping["job"]
    assert job["sites"] == 1 and "name" not in job and "faults" not in minimal.mapping, job
    (name,) = job["site_names"]
    assert " " in name and name.isascii(), name  # the first locale, a person's name


SPLITS = "splits-site-name"
def _spaced_seed() -> int:
    """The first session seed whose schedule 0 names a site with a space (a pure function
    of the strategy: found by drawing, not pinned, so a change of the strategy's draws
    moves it instead of breaking the test)."""
    for seed in range(1, 200):
        names = draw_schedule(INFO, seed, 0).mapping["job"].get("site_names", [])
        if any(" " in n for n in names):
            return seed
    raise AssertionError("no seed in 1..199 names a site with a space in its schedule 0")


def test_an_early_seed_names_a_site_with_a_space() -> None:
    seed = _spaced_seed()  # raises when none does
    assert seed < 200


@pytest.mark.slow
def test_exploring_with_names_finds_a_launcher_that_splits_a_site_name(
    tmp_path: Path, no_leftover_children: None
) -> None:
    """The planted ``splits-site-name`` launcher passes every shipped scenario (site-N has
    no space); the explorer finds it only with names on, and keeps a file that fails on
    the variant and passes on the correct runtime."""
    from planted.target import PlantedTarget  # noqa: PLC0415  (tests/ is on sys.path)

    from pytest_flrelia.explore import explore  # noqa: PLC0415

    target = PlantedTarget()
    seed = _spaced_seed()
    report = explore(target, variant=SPLITS, count=1, budget=60.0, seed=seed,
                     out_dir=tmp_path)
    found = report.first_failure()
    assert found is not None, report.summary_lines()
    assert found.scenario_path is not None
    (scenario,) = load_scenarios(found.scenario_path)
    assert any(" " in n for n in scenario.job.site_names()), scenario.job
    assert found.shrunk_faults is not None and found.shrunk_faults <= 2
    with pytest.raises(ScenarioFailure):
        run_scenario(scenario, Settings(target="planted", known_bug=SPLITS),
                     targets=lambda name: target)
    run_scenario(scenario, Settings(target="planted"), targets=lambda name: target)

    class Unnamed(PlantedTarget):
        info = dataclasses.replace(PlantedTarget.info, named_sites=False)

    plain = explore(Unnamed(), variant=SPLITS, count=1, budget=60.0, seed=seed)
    assert plain.first_failure() is None, plain.summary_lines()
