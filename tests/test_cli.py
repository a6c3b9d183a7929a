"""``python -m reference_impl run``: the drop-in demonstration of the reference executor."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reference_impl", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("mode", [[], ["--launch-once"]], ids=["per-round", "launch-once"])
def test_run_prints_every_round_and_a_summary(mode: list[str]) -> None:
    done = run_cli("run", "--sites", "2", "--rounds", "3", "--tensor-size", "64KiB", *mode)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line for line in lines if line.startswith("round ")] == [
        "round 1: ok",
        "round 2: ok",
        "round 3: ok",
    ]
    summary = lines[-1]
    # 2 sites x 3 rounds x 4 tensors x 64 KiB
    assert summary.startswith("summary: 3 round(s), 1572864 bytes downloaded"), summary


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tensor-size", "lots"], "argument --tensor-size: invalid size 'lots'; valid: 1024, "),
        (["--tensor-size=-1KiB"], "argument --tensor-size: negative size '-1KiB'"),
        (
            ["--tensor-size", "1001"],
            "argument --tensor-size: 1001 bytes is not a whole number of float64 elements "
            "(8 bytes each)",
        ),
        (["--tensor-size", "0"], "argument --tensor-size: must be at least 8 bytes, got 0"),
        (["--sites", "0"], "argument --sites: must be >= 1, got 0"),
        (["--rounds", "0"], "argument --rounds: must be >= 1, got 0"),
        (["--rounds=-3"], "argument --rounds: must be >= 1, got -3"),
        (["--tensors=-1"], "argument --tensors: must be >= 0, got -1"),
        (["--sites", "two"], "argument --sites: expected an integer, got 'two'"),
    ],
)
def test_a_bad_value_is_a_usage_error_worded_as_in_scenario_files(
    args: list[str], message: str
) -> None:
    done = run_cli("run", *args)
    assert done.returncode == 2
    assert message in done.stderr, done.stderr
    assert done.stdout == ""  # refused before any job started


def test_tensors_that_cannot_fit_in_memory_are_refused_with_the_arithmetic() -> None:
    done = run_cli("run", "--sites", "3", "--tensors", "1000", "--tensor-size", "1GiB")
    assert done.returncode == 2
    assert re.search(
        r"1000 tensors x 1GiB x \(3 sites \+ the server's model\) = 4000GiB at least, more "
        r"than the [\d.]+[KMG]iB of memory available on this host \(the budget: "
        r"psutil.virtual_memory\(\).available\)",
        done.stderr,
    ), done.stderr
    assert done.stdout == ""


def test_help_gives_each_option_its_meaning_unit_and_default() -> None:
    done = run_cli("run", "--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    for expected in (
        "--sites N sites (clients) in the job, each with its own training process; "
        "a whole number >= 1 (default: 2)",
        "--rounds N rounds the server runs; a whole number >= 1 (default: 3)",
        "--tensor-size SIZE bytes of each tensor: 1024, 64KiB, 1MiB, 1GiB, 64KB, 1MB, 1GB; "
        "a whole number of float64 elements (8 bytes each) (default: 1MiB)",
        "--tensors N tensors in each site's result; 0: nothing to download (default: 4)",
        "--launch-once one training process for all rounds (default: one per round)",
    ):
        assert expected in text, done.stdout
