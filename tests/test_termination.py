"""SIGTERM unwinds the harness's own commands: what they made in the temp directory
goes, and they exit with 143, as a shell reports a SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pytest_flrelia.harness import termination
from pytest_flrelia.harness.termination import SIGTERM_STATUS

WAIT = 60.0

UNWINDS = textwrap.dedent(
    """\
    import sys, threading
    from pathlib import Path
    from pytest_flrelia.harness.termination import sigterm_exits
    mark = Path(sys.argv[1])
    with sigterm_exits():
        try:
            print("ready", flush=True)
            threading.Event().wait()
        finally:
            mark.write_text("unwound")
    """
)


def _wait_for(predicate: object, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_sigterm_raises_system_exit_so_finally_blocks_run(tmp_path: Path) -> None:
    mark = tmp_path / "mark"
    proc = subprocess.Popen([sys.executable, "-c", UNWINDS, str(mark)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(WAIT) == SIGTERM_STATUS
    assert mark.read_text() == "unwound"


def test_without_it_sigterm_skips_them(tmp_path: Path) -> None:
    """The check above can fail: the default action leaves the mark unwritten."""
    mark = tmp_path / "mark"
    plain = UNWINDS.replace("with sigterm_exits():", "if True:")
    proc = subprocess.Popen([sys.executable, "-c", plain, str(mark)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(WAIT) == -signal.SIGTERM
    assert not mark.exists()


@pytest.mark.slow
@pytest.mark.parametrize("jobs", [1, 2])
def test_a_sigterm_mid_run_leaves_no_temp_dir_of_the_explorer(tmp_path: Path, jobs: int) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest_flrelia.explore", "-n", "40", "-j", str(jobs),
         "--budget", "5m"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        _wait_for(lambda: any(temp.glob("flrelia-run-*")), "no run started")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(WAIT) == SIGTERM_STATUS
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert sorted(p.name for p in temp.iterdir()) == []


def test_the_plugins_sigterm_handler_goes_only_over_the_default_and_is_restored() -> None:
    """This session's own plugin installed it already: set the default back for the test."""
    session = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        restore = termination.unwind_on_sigterm()
        assert restore is not None
        assert termination.unwind_on_sigterm() is None  # a handler is there: left alone
        with pytest.raises(termination.Terminated):
            signal.raise_signal(signal.SIGTERM)
        restore()
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, session)
