"""SubprocessLauncher behaviours NVFlare 2.7.2's ``subprocess_launcher_test.py`` asserts,
checked on real processes."""

from __future__ import annotations

import logging
import sys

import psutil
import pytest

from reference_impl.launcher import SUBPROCESS_LOGGER, LauncherState, RunStatus, SubprocessLauncher
from reference_impl.process_stop import GroupStopStrategy

WAIT = 10.0
"""Upper bound for one wait; normally met in milliseconds."""


pytestmark = pytest.mark.usefixtures("no_leftover_children")


def writer(data: bytes) -> list[str]:
    """A child that writes ``data`` to stdout as it is, byte for byte, then exits."""
    return [sys.executable, "-c", f"import sys; sys.stdout.buffer.write({data!r})"]


def forwarded_lines(data: bytes, name: str, caplog: pytest.LogCaptureFixture) -> list[str]:
    caplog.set_level(logging.INFO, logger=SUBPROCESS_LOGGER)
    launcher = SubprocessLauncher(writer(data), launch_once=False, name=name)
    try:
        assert launcher.launch_task("train", {})
        assert launcher.wait_for_exit(WAIT)
    finally:
        launcher.stop_task()  # lets the output thread log what is left, then joins it
    return [r.getMessage() for r in caplog.records if r.name == f"{SUBPROCESS_LOGGER}.{name}"]


@pytest.mark.parametrize(
    ("data", "lines"),
    [
        (b"a\r\nb\npartial", ["a", "b", "partial"]),
        (b"a\n\nb\n", ["a", "", "b"]),
        (b"crlf\r\n\r\nlast\r\n", ["crlf", "", "last"]),
    ],
    ids=["crlf-lf-and-unterminated", "empty-line-kept", "crlf-only"],
)
def test_output_is_logged_line_by_line_without_line_endings(
    data: bytes, lines: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    """NVFlare ``test_log_subprocess_output``: no ``\\r`` left over, the unterminated
    last line still logged, an empty line logged as one."""
    assert forwarded_lines(data, "parity-output", caplog) == lines


@pytest.mark.parametrize("launch_once", [False, True], ids=["per-round", "launch-once"])
def test_a_new_launcher_holds_no_process(launch_once: bool) -> None:
    launcher = SubprocessLauncher(writer(b""), launch_once=launch_once, name="parity-fresh")
    assert launcher.launch_once is launch_once
    assert launcher.pid is None
    assert launcher.state is LauncherState.IDLE
    assert launcher.check_run_status() is RunStatus.NOT_STARTED
    assert launcher.wait_for_exit(0)
    launcher.stop_task()  # nothing held: a no-op
    assert launcher.state is LauncherState.IDLE


def test_stop_of_a_process_flooding_its_output_ends_it_and_forgets_it() -> None:
    """NVFlare ``test_stop``: a child printing without pause is stopped, nothing is held."""
    flood = [sys.executable, "-c", "while True: print('cool', flush=True)"]
    launcher = SubprocessLauncher(
        flood, launch_once=False, name="parity-flood", stop_strategy=GroupStopStrategy(grace=5.0)
    )
    assert launcher.launch_task("train", {})
    pid = launcher.pid
    assert pid is not None and launcher.check_run_status() is RunStatus.RUNNING

    launcher.stop_task()

    assert launcher.pid is None and launcher.state is LauncherState.IDLE
    assert launcher.check_run_status() is RunStatus.NOT_STARTED
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
