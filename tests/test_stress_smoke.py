"""benchmarks/stress.py runs a scenario suite under CPU burners and reports false
failures (tiny sizes; the real run is ``python benchmarks/stress.py -n 50``, see
docs/reliability.md)."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # benchmarks/ is a directory of the checkout, not installed
    sys.path.insert(0, str(ROOT))

from benchmarks import stress  # noqa: E402

TINY = """\
- name: tiny-passes
  job: {sites: 1, rounds: 1, tensors: {count: 1, size: 1KiB}}
  expect: {outcome: success, within: 30s}
- name: tiny-fails
  description: succeeds, but expects a failure, so the "correct runtime" fails it
  job: {sites: 1, rounds: 1, tensors: {count: 1, size: 1KiB}}
  expect: {outcome: failure, within: 30s}
"""


def burners_alive() -> list[psutil.Process]:
    """This process's burners still alive, wherever they went (a burner names the pid of
    the process that started it; another stress run's burners on this machine are not ours)."""
    mine = str(os.getpid())
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        cmdline = process.info["cmdline"] or []
        if (
            stress.BURNER_CODE in cmdline
            and cmdline[-1:] == [mine]
            and process.info["status"] != psutil.STATUS_ZOMBIE
        ):
            found.append(process)
    return found


@pytest.mark.slow
def test_stress_reports_each_false_failure_with_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "tiny.scenario.yaml").write_text(TINY)
    argv = ["-n", "1", "--burners", "2", "--warmup", "0", "--scenarios", str(tmp_path)]
    assert stress.main(argv) == 1, "a false failure must fail the stress check"
    out = capsys.readouterr().out
    assert f"command: python benchmarks/stress.py {' '.join(argv)}" in out
    assert "2 CPU burners on" in out
    row = next(line.split() for line in out.splitlines() if line.lstrip().startswith("1 "))
    assert row[:4] == ["1", "1", "1", "0"], out  # run 1: 1 passed, 1 failed, 0 errors
    assert "false failures: 1 in 1 of 1 runs" in out
    (failure,) = [line for line in out.splitlines() if line.startswith("  run 1: FAILED")]
    assert "tiny.scenario.yaml::tiny-fails - " in failure and "tiny-passes" not in failure
    assert burners_alive() == [], "a burner outlived the stress run"


def test_burners_spin_while_held_and_are_killed_however_the_block_ends() -> None:
    with pytest.raises(RuntimeError, match="boom"), stress.burning(2) as burners:
        pids = [p.pid for p in burners.processes]
        assert len(pids) == 2
        for pid in pids:
            process = psutil.Process(pid)
            assert process.status() != psutil.STATUS_ZOMBIE
            assert process.ppid() == psutil.Process().pid
        raise RuntimeError("boom")
    assert not [pid for pid in pids if psutil.pid_exists(pid)], "a burner survived"
    assert burners_alive() == []


def test_parse_takes_pytests_counts_and_summary_lines() -> None:
    output = textwrap.dedent(
        """\
        ..F.E
        FAILED scenarios/a.scenario.yaml::one - scenario one failed against the correct impl
        ERROR scenarios/b.scenario.yaml::two - harness error
        flrelia: 4 scenarios, 2 faults injected, 40 invariants checked (1 failed)
        3 passed, 1 failed, 1 error in 12.34s
        """
    )
    counts, failures = stress.parse(output)
    assert counts == {"passed": 3, "failed": 1, "errors": 1}
    assert [line.split()[1] for line in failures] == [
        "scenarios/a.scenario.yaml::one",
        "scenarios/b.scenario.yaml::two",
    ]
