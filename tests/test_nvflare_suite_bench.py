"""benchmarks/nvflare_suite.py runs and prints well-formed figures, with the reference
target standing in for nvflare (the real run needs NVFlare venvs; docs/performance.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # benchmarks/ is a directory of the checkout, not installed
    sys.path.insert(0, str(ROOT))

from benchmarks import nvflare_suite  # noqa: E402
from pytest_flrelia.tools.nvflare_matrix import Version  # noqa: E402
from tests.test_benchmarks_smoke import assert_measured  # noqa: E402

ONE = """\
- name: one-round
  job: {sites: 1, rounds: 1, tensors: {count: 1, size: 16KiB}}
  expect: {outcome: success, within: 10s}
- name: skipped-here
  marks: [skip]
  expect: {outcome: success}
"""


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_suite_benchmark_measures_both_ways_and_the_ratio(tmp_path: Path) -> None:
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    (scenarios / "one.scenario.yaml").write_text(ONE)

    keep = tmp_path / "keep"
    keep.mkdir()
    figures = nvflare_suite.measure_version(
        Version("2.7.2", Path(sys.executable)), scenarios, target="reference", cwd=tmp_path,
        keep=keep,
    )

    values = assert_measured(
        figures,
        "nvflare_suite_2_7_2_n2_s",
        "nvflare_suite_2_7_2_serial_s",
        "nvflare_suite_2_7_2_speedup",
        "reference_same_items_2_7_2_n2_s",
        "nvflare_over_reference_2_7_2_n2",
        "nvflare_over_reference_2_7_2_serial",
    )
    assert values["nvflare_over_reference_2_7_2_n2"] == pytest.approx(
        values["nvflare_suite_2_7_2_n2_s"] / values["reference_same_items_2_7_2_n2_s"]
    )
    assert figures[0].note == "1 of 2 items ran"
    # The suite's records stay where the matrix tool's --reuse / --observe read them.
    assert sorted(p.name for p in keep.glob("*.json")) == [
        "2.7.2-reference-n1.json", "2.7.2-reference-n2.json"
    ]
