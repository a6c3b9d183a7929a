"""The benchmarks still run and print well-formed figures (tiny sizes; the real run is
``python benchmarks/run.py``, see docs/performance.md)."""

from __future__ import annotations

import math
import re
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # benchmarks/ is a directory of the checkout, not installed
    sys.path.insert(0, str(ROOT))

from benchmarks import headroom, run  # noqa: E402
from benchmarks.detect import SCENARIO_DIR, detect, detection_order  # noqa: E402
from benchmarks.download import measure_download  # noqa: E402
from benchmarks.figure import Figure, Goal, render_table  # noqa: E402
from benchmarks.round_cost import measure_round_cost  # noqa: E402
from benchmarks.scale import growth_exponent, measure_scale  # noqa: E402
from pytest_flrelia.tools.zoo import shipped_scenarios  # noqa: E402

FIGURE_LINE = re.compile(r"^[a-z0-9_-]+: -?\d+\.\d{3}$")


def assert_measured(figures: list[Figure], *names: str) -> dict[str, float]:
    """Every figure prints as ``name: value``; the named ones are there, finite and > 0."""
    for figure in figures:
        assert FIGURE_LINE.match(figure.line()), figure.line()
    values = {f.name: f.value for f in figures}
    for name in names:
        assert name in values, f"{name} missing from {sorted(values)}"
        assert math.isfinite(values[name]) and values[name] > 0, (name, values[name])
    return values


def test_run_prints_one_line_per_figure_then_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    hook = threading.excepthook
    assert run.main(["--quick", "--only", "failpoint"]) == 0
    assert threading.excepthook is hook, "run.main must restore the thread exception hook"
    out = capsys.readouterr().out.splitlines()
    assert FIGURE_LINE.match(out[0]) and out[0].startswith("failpoint_off_ns: "), out
    table = "\n".join(out[1:])
    assert re.search(r"^failpoint_off_ns\s+\d+\.\d{3}\s+< 1000\s+(yes|NO)$", table, re.M), table


def test_run_refuses_an_unknown_benchmark(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        run.main(["--only", "nosuch"])
    assert "unknown benchmark 'nosuch'; choose from failpoint," in capsys.readouterr().err


def test_table_says_which_goals_are_met() -> None:
    table = render_table(
        [
            Figure("fast_enough", 0.5, Goal("<=", 1.0)),
            Figure("too_slow", 2.0, Goal("<=", 1.0), note="it was busy"),
            Figure("never_caught", math.inf, Goal("<=", 2.0)),
            Figure("context_only", 3.0),
        ]
    )
    rows = {line.split()[0]: line.split()[1:] for line in table.splitlines()[2:]}
    assert rows["fast_enough"] == ["0.500", "<=", "1", "yes"]
    assert rows["too_slow"] == ["2.000", "<=", "1", "NO"]
    assert rows["never_caught"] == ["inf", "<=", "2", "NO"]
    assert rows["context_only"] == ["3.000"]
    assert "note: too_slow: it was busy" in table


def test_growth_exponent_is_the_log_log_slope() -> None:
    assert growth_exponent([(1, 2.0), (4, 8.0), (16, 32.0)]) == pytest.approx(1.0)
    assert growth_exponent([(1, 1.0), (100, 10.0)]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="two different sizes"):
        growth_exponent([(4, 1.0), (4, 2.0)])


def test_round_cost_compares_a_round_with_interpreter_start() -> None:
    values = assert_measured(
        measure_round_cost(rounds=1, repeats=1),
        "interpreter_import_seconds",
        "round_seconds",
        "round_cost_ratio",
        "round_launch_to_init_seconds",
        "round_exit_noticed_seconds",
        "round_seconds_production_stop_poll",
    )
    assert values["round_cost_ratio"] == pytest.approx(
        values["round_seconds"] / values["interpreter_import_seconds"], rel=1e-3
    )


def test_download_from_a_subprocess_against_raw_loopback() -> None:
    values = assert_measured(
        measure_download(nbytes=4 * 1024 * 1024, repeats=1, chunk_bytes=256 * 1024),
        "raw_loopback_mib_per_s",
        "download_mib_per_s",
        "chunk_digest_mib_per_s",
        "download_throughput_ratio",
    )
    # RSS growth: zero when the process reuses memory an earlier test already touched.
    assert 0 <= values["download_peak_memory_ratio"] < 1, values
    assert values["download_throughput_ratio"] == pytest.approx(
        values["download_mib_per_s"] / values["raw_loopback_mib_per_s"], rel=1e-3
    )


def test_scale_reports_per_round_site_time_and_growth() -> None:
    values = assert_measured(
        measure_scale([(1, 1), (1, 2)]), "scale_rounds_sites_1x1", "scale_rounds_sites_1x2"
    )
    # Two sites run in parallel, so the bigger job may well be the faster one: any sign.
    assert math.isfinite(values["scale_rounds_sites_growth"])
    assert len(values) == 3


def test_a_known_bug_is_detected_by_the_scenario_that_catches_it() -> None:
    scenarios = shipped_scenarios(SCENARIO_DIR)
    slug = "launch-once-exits"
    assert slug in detection_order(slug, scenarios)[0].catches
    catcher = detection_order(slug, scenarios)[0]
    detection = detect(slug, [catcher])
    assert math.isfinite(detection.seconds) and detection.seconds > 0
    assert detection.scenario == catcher.name and detection.failed_checks, detection
    assert detection.describe().startswith(f"{catcher.name} failed ")


def test_headroom_prints_each_scenario_with_its_ratio_and_flags_a_short_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    name = "stale-peer-gone[launch_once=true]"
    assert headroom.main(["-n", "1", "--only", name]) == 0
    out = capsys.readouterr().out
    row = rf"^{re.escape(name)}\s+\d+\.\d\ds\s+\d+\.\d\ds\s+10\.0s\s+\d+\.\dx$"
    assert re.search(row, out, re.M), out
    assert out.rstrip().endswith("1 scenarios, 0 below 2x headroom or failing")
    short = headroom.Headroom("tight", within=2.0, seconds=(1.5, 1.9, 2.1), failures=0)
    assert short.typical == 1.9 and short.ratio < headroom.HEADROOM_GOAL
    assert headroom.main(["-n", "1", "--only", name, "--goal", "1000"]) == 1
