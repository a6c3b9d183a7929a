"""The catalog sweep covers every fault, and every scenario it writes loads."""

from __future__ import annotations

from pathlib import Path

from pytest_flrelia.scenario.catalog import AT_POINTS, CATALOG
from pytest_flrelia.scenario.loader import load_scenarios
from pytest_flrelia.targets.nvflare import faults_sweep


def test_the_sweep_names_every_catalog_fault_and_every_at_point() -> None:
    cases = list(faults_sweep.cases())
    names = [case.name for case in cases]
    assert len(names) == len(set(names))
    swept = {entry["fault"] for case in cases for entry in case.faults}
    assert swept == set(CATALOG)
    for fault in ("early_sigterm", "crash"):
        points = {e["at"] for c in cases for e in c.faults if e["fault"] == fault}
        assert points == set(AT_POINTS), fault


def test_every_written_scenario_loads(tmp_path: Path) -> None:
    paths = faults_sweep.write(tmp_path)
    assert len(paths) == len(list(faults_sweep.cases()))
    for path in paths:
        scenarios = load_scenarios(path)  # a launch_once matrix: one per mode
        assert 1 <= len(scenarios) <= 2
        assert {s.name.split("[")[0] for s in scenarios} == {
            path.name.removesuffix(".scenario.yaml")
        }
