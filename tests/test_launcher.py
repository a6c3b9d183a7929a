"""SubprocessLauncher and GroupStopStrategy against real processes and signals.

The helper scripts in ``tests/scripts`` announce themselves on stdout
(``CHILD-READY pid=N``); the launcher forwards that to logging, and the tests
wait on those lines, or on a pidfd for an exit, never on a clock.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from pytest_flrelia.contract.failpoints import FAILPOINTS_ENV
from pytest_flrelia.contract.processes import wait_gone
from pytest_flrelia.contract.timeline import EventKind, Timeline
from reference_impl.launcher import LauncherState, RunStatus, SubprocessLauncher
from reference_impl.process_stop import GroupStopStrategy, SignalCallback, StopStrategy

SCRIPTS = Path(__file__).parent / "scripts"
WAIT = 10.0
"""Upper bound for any one wait in these tests; normally met in milliseconds."""


pytestmark = pytest.mark.usefixtures("no_leftover_children")


class LineWatcher(logging.Handler):
    """Collects forwarded output lines and lets a test wait for one."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.lines: list[str] = []
        self._changed = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self._changed:
            self.lines.append(record.getMessage())
            self._changed.notify_all()

    def wait_for(self, prefix: str, timeout: float = WAIT) -> str:
        def found() -> str | None:
            return next((line for line in self.lines if line.startswith(prefix)), None)

        with self._changed:
            if not self._changed.wait_for(lambda: found() is not None, timeout):
                raise AssertionError(f"no output line {prefix!r} within {timeout} s: {self.lines}")
            line = found()
            assert line is not None
            return line

    def wait_for_pid(self, prefix: str) -> psutil.Process:
        """The process that printed ``<prefix> pid=N``, captured while it runs."""
        line = self.wait_for(prefix)
        return psutil.Process(int(line.rsplit("pid=", 1)[1]))


@pytest.fixture
def output() -> Iterator[LineWatcher]:
    watcher = LineWatcher()
    parent = logging.getLogger("reference_impl.subprocess")
    old_level = parent.level
    parent.setLevel(logging.INFO)
    parent.addHandler(watcher)
    yield watcher
    parent.removeHandler(watcher)
    parent.setLevel(old_level)


@pytest.fixture
def timeline() -> Timeline:
    return Timeline("test")


LauncherFactory = Callable[..., SubprocessLauncher]


@pytest.fixture
def make_launcher(
    timeline: Timeline, output: LineWatcher, request: pytest.FixtureRequest
) -> Iterator[LauncherFactory]:
    """Builds launchers for a helper script; stops every one at teardown."""
    launchers: list[SubprocessLauncher] = []

    def make(
        script: str,
        *args: str,
        grace: float = 5.0,
        stop_strategy: StopStrategy | None = None,
        launch_once: bool = False,
        base_env: dict[str, str] | None = None,
    ) -> SubprocessLauncher:
        launcher = SubprocessLauncher(
            [sys.executable, str(SCRIPTS / script), *args],
            launch_once=launch_once,
            name=f"{request.node.name}-{len(launchers)}",
            stop_strategy=stop_strategy or GroupStopStrategy(grace=grace),
            timeline=timeline,
            site="site-1",
            base_env=base_env,
        )
        launchers.append(launcher)
        return launcher

    yield make
    for launcher in launchers:
        launcher.stop_task()


def wait_exited(pid: int, timeout: float = WAIT) -> None:
    """Wait until ``pid`` exits without reaping it (the launcher must see the status)."""
    assert wait_gone([psutil.Process(pid)], timeout) == [], f"pid {pid} still running"


def is_dead(proc: psutil.Process) -> bool:
    """Gone, or a zombie waiting for init to reap it (it has exited either way)."""
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def signals_sent(timeline: Timeline) -> list[tuple[str, str]]:
    return [
        (e.detail["signal"], e.detail["target"]) for e in timeline.events(EventKind.SIGNAL_SENT)
    ]


def timed_stop(launcher: SubprocessLauncher) -> float:
    start = time.monotonic()
    launcher.stop_task()
    return time.monotonic() - start


def test_script_exiting_zero_reports_success(make_launcher: LauncherFactory) -> None:
    launcher = make_launcher("exit_with.py", "0")
    assert launcher.check_run_status() is RunStatus.NOT_STARTED
    assert launcher.launch_task("train", {})
    assert launcher.pid is not None
    wait_exited(launcher.pid)
    assert launcher.check_run_status() is RunStatus.SUCCESS


def test_script_exiting_nonzero_reports_failed(
    make_launcher: LauncherFactory, timeline: Timeline
) -> None:
    launcher = make_launcher("exit_with.py", "3")
    launcher.launch_task("train", {})
    assert launcher.pid is not None
    wait_exited(launcher.pid)
    assert launcher.check_run_status() is RunStatus.FAILED
    launcher.stop_task()
    assert [e.detail["returncode"] for e in timeline.events(EventKind.REAPED)] == [3]


def test_running_script_reports_running(
    make_launcher: LauncherFactory, output: LineWatcher
) -> None:
    launcher = make_launcher("family.py")
    launcher.launch_task("train", {})
    output.wait_for("CHILD-READY")
    assert launcher.check_run_status() is RunStatus.RUNNING


def test_wait_for_exit_wakes_at_the_exit_and_leaves_the_status_to_the_launcher(
    make_launcher: LauncherFactory, output: LineWatcher, timeline: Timeline
) -> None:
    launcher = make_launcher("family.py")
    assert launcher.wait_for_exit(WAIT), "nothing held: nothing to wait for"
    launcher.launch_task("train", {})
    output.wait_for("CHILD-READY")
    assert launcher.pid is not None
    assert not launcher.wait_for_exit(0.05), "a running process times the wait out"

    woke: list[bool] = []
    waiter = threading.Thread(target=lambda: woke.append(launcher.wait_for_exit(10 * WAIT)))
    waiter.start()
    os.kill(launcher.pid, signal.SIGKILL)  # the leader only: its group is the stop's business
    waiter.join(WAIT)  # a tenth of the wait's own timeout

    assert woke == [True], "the wait did not end at the exit"
    assert launcher.check_run_status() is RunStatus.FAILED, "the Popen keeps the returncode"
    launcher.stop_task()
    assert [e.detail["returncode"] for e in timeline.events(EventKind.REAPED)] == [-signal.SIGKILL]


def test_stop_of_exited_process_reaps_it_without_signals(
    make_launcher: LauncherFactory, timeline: Timeline
) -> None:
    launcher = make_launcher("exit_with.py", "0")
    launcher.launch_task("train", {})
    assert launcher.pid is not None
    wait_exited(launcher.pid)
    launcher.stop_task()
    assert signals_sent(timeline) == []
    assert [e.detail["returncode"] for e in timeline.events(EventKind.REAPED)] == [0]
    assert launcher.check_run_status() is RunStatus.NOT_STARTED
    assert launcher.state is LauncherState.IDLE


def test_cooperative_script_stops_on_sigterm_without_sigkill(
    make_launcher: LauncherFactory, output: LineWatcher, timeline: Timeline
) -> None:
    launcher = make_launcher("family.py", grace=5.0)
    launcher.launch_task("train", {})
    child = output.wait_for_pid("CHILD-READY")
    assert timed_stop(launcher) < 2.0
    assert signals_sent(timeline) == [("SIGTERM", "group")]
    assert [e.detail["returncode"] for e in timeline.events(EventKind.REAPED)] == [-signal.SIGTERM]
    assert is_dead(child)
    assert launcher.pid is None
    assert launcher.check_run_status() is RunStatus.NOT_STARTED


def test_sigterm_ignoring_script_is_killed_after_grace(
    make_launcher: LauncherFactory, output: LineWatcher, timeline: Timeline
) -> None:
    launcher = make_launcher("family.py", "--ignore-sigterm", grace=0.3)
    launcher.launch_task("train", {})
    child = output.wait_for_pid("CHILD-READY")
    elapsed = timed_stop(launcher)
    assert 0.3 <= elapsed < 3.0
    assert signals_sent(timeline) == [("SIGTERM", "group"), ("SIGKILL", "group")]
    assert [e.detail["returncode"] for e in timeline.events(EventKind.REAPED)] == [-signal.SIGKILL]
    assert is_dead(child)
    kinds = [e.kind for e in timeline.events() if e.kind is not EventKind.LAUNCH]
    assert kinds == [
        EventKind.STOP_REQUESTED,
        EventKind.SIGNAL_SENT,
        EventKind.SIGNAL_SENT,
        EventKind.REAPED,
    ]


def test_grandchild_holding_stdout_does_not_hang_stop(
    make_launcher: LauncherFactory, output: LineWatcher, timeline: Timeline
) -> None:
    launcher = make_launcher("family.py", "--ignore-sigterm", "--grandchild", "inherit", grace=0.3)
    launcher.launch_task("train", {})
    grandchild = output.wait_for_pid("GRANDCHILD-READY")
    child = output.wait_for_pid("CHILD-READY")
    assert timed_stop(launcher) < 3.0
    assert is_dead(child)
    assert is_dead(grandchild)
    assert ("SIGKILL", "group") in signals_sent(timeline)


def test_grandchild_ignoring_sigterm_is_killed_after_cooperative_child_exits(
    make_launcher: LauncherFactory, output: LineWatcher, timeline: Timeline
) -> None:
    launcher = make_launcher(
        "family.py", "--grandchild", "inherit", "--grandchild-ignores-sigterm", grace=0.3
    )
    launcher.launch_task("train", {})
    grandchild = output.wait_for_pid("GRANDCHILD-READY")
    output.wait_for("CHILD-READY")
    assert timed_stop(launcher) < 3.0
    assert is_dead(grandchild)
    assert signals_sent(timeline) == [("SIGTERM", "group"), ("SIGKILL", "group")]
    assert [e.detail["returncode"] for e in timeline.events(EventKind.REAPED)] == [-signal.SIGTERM]


@pytest.mark.parametrize(
    "child_flags", [(), ("--ignore-sigterm",)], ids=["cooperative", "stubborn"]
)
def test_grandchild_that_left_the_group_is_killed(
    make_launcher: LauncherFactory,
    output: LineWatcher,
    timeline: Timeline,
    child_flags: tuple[str, ...],
) -> None:
    launcher = make_launcher("family.py", *child_flags, "--grandchild", "setsid", grace=0.3)
    launcher.launch_task("train", {})
    grandchild = output.wait_for_pid("GRANDCHILD-READY")
    child = output.wait_for_pid("CHILD-READY")
    assert os.getpgid(grandchild.pid) != child.pid  # it really left the group
    assert timed_stop(launcher) < 3.0
    assert is_dead(child)
    assert is_dead(grandchild)
    assert ("SIGKILL", "pid") in signals_sent(timeline)


def test_exited_leader_leftover_group_member_is_killed(
    make_launcher: LauncherFactory, output: LineWatcher, timeline: Timeline
) -> None:
    launcher = make_launcher(
        "family.py", "--grandchild", "inherit", "--exit-after-ready", "0", grace=5.0
    )
    launcher.launch_task("train", {})
    grandchild = output.wait_for_pid("GRANDCHILD-READY")
    assert launcher.pid is not None
    wait_exited(launcher.pid)
    assert not is_dead(grandchild)
    assert timed_stop(launcher) < 2.0  # no grace for a process that already ended
    assert is_dead(grandchild)
    assert signals_sent(timeline) == [("SIGKILL", "group")]
    assert [e.detail["returncode"] for e in timeline.events(EventKind.REAPED)] == [0]


class LeaderOnlyStopStrategy(StopStrategy):
    """Kills only the direct child, leaving a grandchild that holds the output pipe."""

    def stop(self, process: subprocess.Popen[bytes], on_signal: SignalCallback) -> int:
        if process.poll() is None:
            process.kill()
            on_signal(signal.SIGKILL, "pid")
        return process.wait(timeout=WAIT)


def test_stop_never_waits_for_output_pipe_held_by_survivor(
    make_launcher: LauncherFactory, output: LineWatcher
) -> None:
    launcher = make_launcher(
        "family.py", "--grandchild", "inherit", stop_strategy=LeaderOnlyStopStrategy()
    )
    launcher.launch_task("train", {})
    grandchild = output.wait_for_pid("GRANDCHILD-READY")
    output.wait_for("CHILD-READY")
    try:
        assert timed_stop(launcher) < 2.0
        assert not is_dead(grandchild)  # still holds the write end of the pipe
        assert launcher.state is LauncherState.IDLE
    finally:
        grandchild.kill()
        wait_gone([grandchild], WAIT)
    assert is_dead(grandchild)


def test_stop_is_idempotent(
    make_launcher: LauncherFactory, output: LineWatcher, timeline: Timeline
) -> None:
    launcher = make_launcher("family.py")
    launcher.stop_task()  # nothing held: nothing happens
    launcher.launch_task("train", {})
    output.wait_for("CHILD-READY")
    launcher.stop_task()
    launcher.stop_task()
    assert len(timeline.events(EventKind.STOP_REQUESTED)) == 1
    assert len(timeline.events(EventKind.REAPED)) == 1


def test_concurrent_stops_stop_once(
    make_launcher: LauncherFactory, output: LineWatcher, timeline: Timeline
) -> None:
    launcher = make_launcher("family.py", "--ignore-sigterm", grace=0.3)
    launcher.launch_task("train", {})
    child = output.wait_for_pid("CHILD-READY")
    both_ready = threading.Barrier(2, timeout=WAIT)
    errors: list[BaseException] = []

    def stop() -> None:
        try:
            both_ready.wait()
            launcher.stop_task()
        except BaseException as error:
            errors.append(error)
            raise

    threads = [threading.Thread(target=stop, name=f"test-stop-{i}") for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert is_dead(child)
    assert len(timeline.events(EventKind.STOP_REQUESTED)) == 1
    assert len(timeline.events(EventKind.REAPED)) == 1
    assert launcher.state is LauncherState.IDLE


def test_launch_after_stop_spawns_a_new_process(
    make_launcher: LauncherFactory, output: LineWatcher, timeline: Timeline
) -> None:
    launcher = make_launcher("family.py")
    assert launcher.launch_task("round-1", {})
    first = launcher.pid
    output.wait_for("CHILD-READY")
    launcher.stop_task()
    assert launcher.launch_task("round-2", {})
    assert launcher.pid is not None
    assert launcher.pid != first
    assert [e.detail["task"] for e in timeline.events(EventKind.LAUNCH)] == ["round-1", "round-2"]


def test_launch_while_held_is_skipped(make_launcher: LauncherFactory, timeline: Timeline) -> None:
    launcher = make_launcher("exit_with.py", "0")
    assert launcher.launch_task("round-1", {})
    pid = launcher.pid
    assert pid is not None
    wait_exited(pid)
    # Exited but not stopped: still held, so the next launch must not spawn.
    assert not launcher.launch_task("round-2", {})
    assert launcher.pid == pid
    skipped = timeline.events(EventKind.LAUNCH_SKIPPED)
    assert [(e.detail["task"], e.detail["pid"]) for e in skipped] == [("round-2", pid)]
    assert len(timeline.events(EventKind.LAUNCH)) == 1


def test_output_lines_are_forwarded_to_logging(
    make_launcher: LauncherFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="reference_impl.subprocess")
    launcher = make_launcher("exit_with.py", "0", "first line", "second line")
    launcher.launch_task("train", {})
    assert launcher.pid is not None
    wait_exited(launcher.pid)
    launcher.stop_task()  # joins the output thread: every line has been logged
    records = [r for r in caplog.records if r.name == f"reference_impl.subprocess.{launcher.name}"]
    assert [r.getMessage() for r in records] == ["first line", "second line"]
    assert {r.levelno for r in records} == {logging.INFO}
    assert {r.threadName for r in records} == {f"launcher-{launcher.name}-output"}


def test_the_shell_passes_everything_but_the_protocol_on(
    make_launcher: LauncherFactory, output: LineWatcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A protocol variable in the shell arrives empty; any other variable is inherited."""
    monkeypatch.setenv(FAILPOINTS_ENV, "agent.before_init=return")
    monkeypatch.setenv("C", "shell")
    launcher = make_launcher(
        "exit_with.py",
        "0",
        "--env",
        FAILPOINTS_ENV,
        "--env",
        "A",
        "--env",
        "B",
        "--env",
        "C",
        base_env={"A": "base", "B": "base"},
    )
    launcher.launch_task("train", {"B": "task"})
    assert output.wait_for(f"ENV {FAILPOINTS_ENV}=") == f"ENV {FAILPOINTS_ENV}="
    assert output.wait_for("ENV A=") == "ENV A=base"
    assert output.wait_for("ENV B=") == "ENV B=task"
    assert output.wait_for("ENV C=") == "ENV C=shell"


def test_explicit_failpoints_override_the_inherited_ones(
    make_launcher: LauncherFactory, output: LineWatcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FAILPOINTS_ENV, "inherited=return")
    launcher = make_launcher("exit_with.py", "0", "--env", FAILPOINTS_ENV)
    launcher.launch_task("train", {FAILPOINTS_ENV: "explicit=return"})
    assert output.wait_for("ENV ") == f"ENV {FAILPOINTS_ENV}=explicit=return"


@pytest.mark.parametrize("launch_once", [True, False])
def test_deferred_stop_is_needed_only_for_a_process_per_round(
    make_launcher: LauncherFactory, launch_once: bool
) -> None:
    launcher = make_launcher("exit_with.py", "0", launch_once=launch_once)
    assert launcher.launch_once is launch_once
    assert launcher.needs_deferred_stop() is (not launch_once)


def test_group_member_gets_the_grace_to_finish_its_cleanup(
    make_launcher: LauncherFactory, output: LineWatcher, timeline: Timeline
) -> None:
    launcher = make_launcher(
        "family.py", "--grandchild", "inherit", "--grandchild-cleanup-seconds", "0.3", grace=5.0
    )
    launcher.launch_task("train", {})
    grandchild = output.wait_for_pid("GRANDCHILD-READY")
    output.wait_for("CHILD-READY")
    launcher.stop_task()
    assert is_dead(grandchild)
    assert signals_sent(timeline) == [("SIGTERM", "group")]  # it outlived the leader, unkilled
    output.wait_for(f"GRANDCHILD-CLEANED pid={grandchild.pid}")


class FailingOnceStopStrategy(StopStrategy):
    """Raises on the first stop (as a failing failpoint or strategy would), then works."""

    def __init__(self) -> None:
        self.calls = 0
        self.inner = GroupStopStrategy(grace=5.0)

    def stop(self, process: subprocess.Popen[bytes], on_signal: SignalCallback) -> int:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("injected stop failure")
        return self.inner.stop(process, on_signal)


def test_failed_stop_keeps_the_process_held_for_a_retry(
    make_launcher: LauncherFactory, output: LineWatcher, timeline: Timeline
) -> None:
    launcher = make_launcher("family.py", stop_strategy=FailingOnceStopStrategy())
    launcher.launch_task("train", {})
    child = output.wait_for_pid("CHILD-READY")
    with pytest.raises(RuntimeError, match="injected stop failure"):
        launcher.stop_task()
    assert launcher.state is LauncherState.HELD
    assert launcher.check_run_status() is RunStatus.RUNNING
    assert not launcher.launch_task("round-2", {})
    launcher.stop_task()
    assert is_dead(child)
    assert launcher.check_run_status() is RunStatus.NOT_STARTED
    assert launcher.pid is None
    assert len(timeline.events(EventKind.REAPED)) == 1
