"""``python -m reference_impl run``: the drop-in demonstration of the reference executor."""

from __future__ import annotations

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


def test_a_bad_size_is_a_usage_error() -> None:
    done = run_cli("run", "--tensor-size", "lots")
    assert done.returncode == 2
    assert "'lots' is not a size" in done.stderr
