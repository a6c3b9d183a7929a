"""No process of a scenario run outlives it, however the run ends (SPEC §5 no_orphans).

Each case runs a real inner pytest session and watches the process table while
it runs and after it ends.  Every process the session starts inherits a tag
unique to the case (``TAG_ENV``), so processes of tests running beside this one
under xdist are never mistaken for ours; a process that carries the
``FLRELIA_RUN_ID`` of a run we saw counts too, even if it lost the tag.
tests/test_watchdog.py covers a client killed outside pytest; here the client
is a pytest session ended every way a CI run ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import psutil
import pytest

from pytest_flrelia.contract.timeline import Event, EventKind
from pytest_flrelia.harness.processes import RUN_ID_ENV

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "scenarios"
TAG_ENV = "FLRELIA_NO_ORPHANS_TAG"
PLUGIN_ARGS = ("-p", "no:flrelia", "-p", "pytest_flrelia.plugin")
QUIET_ARGS = ("-p", "no:hypothesispytest", "-p", "no:faker", "-p", "no:cacheprovider")

SUITE_BOUND = 100.0
"""Upper bound for the shipped suite under ``-n 2`` (20-35 s); inside the 120 s test timeout,
so this test's own message, with the inner output, is what a hang shows."""
INNER_BOUND = 30.0
"""Upper bound for an inner session running one scenario."""
SETTLE = 3.0
"""After a session that ended normally (or was interrupted): its processes are gone by now."""
ABANDONED = 10.0
"""After a session that died without cleaning up: the watchdogs (0.5 s interval) end the rest
once the training process has finished starting (seconds on a loaded 2-core host)."""
POLL = 0.05
WATCH_POLL = 0.2
"""Scan interval while a session runs (a scan costs ~15 ms): brief processes are still
found through the pids the runs record."""
STARTUP_MARGIN = 1.0
"""Slack on ``create_time`` (clock ticks, boot-time based) when filtering new processes."""

# A training process that hangs after round 1's gate while a worker child holds its
# stdout; the deferred stop waits 10 s before forcing it, so the run lasts ~10 s.  The
# other waits are long so that on a loaded host nothing but the stuck exit ends it.
STUCK_JOB = """\
  job:
    sites: 1
    rounds: 2
    tensors: {{count: 1, size: 16KiB}}
    timeouts:
      download_complete: 10s
      stop_wait: 10s
      heartbeat: 30s
      pre_init: 30s
      execution: 30s
  faults:
    - fault: stuck_exit
      round: 1
    - fault: orphan_child
  expect:
    outcome: success
    within: {within}
"""
EXEC_INTO_TRAINING = """\
import os, sys
sys.stdin.readline()
env = {**os.environ, sys.argv[2]: sys.argv[1]}
os.execve(sys.executable, [sys.executable, "-c", "import sys; sys.stdin.read()"], env)
"""
"""Waits for a line, then execs into a process carrying the run id ``argv[1]``."""
OVER_BOUND = "- name: over-its-bound\n" + STUCK_JOB.format(within="1500ms")
LONG_RUN = "- name: long-stuck-run\n" + STUCK_JOB.format(within="30s")


@dataclass(frozen=True)
class Sighting:
    """A process of the inner session, as first seen: enough to say who started it."""

    process: psutil.Process
    command: str
    parent: str
    run_id: str | None

    def describe(self) -> str:
        run = f", scenario run {self.run_id[:8]}" if self.run_id else ""
        return f"pid {self.process.pid} `{self.command}` started by {self.parent}{run}"


def _command(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())[:160]
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "?"


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class Watch:
    """Every process an inner pytest session started, found by its tag (or its run id)."""

    def __init__(self, tag: str, since: float) -> None:
        self.tag = tag
        self.since = since - STARTUP_MARGIN
        self.seen: dict[tuple[int, float], Sighting] = {}
        self.run_ids: set[str] = set()
        self._env: dict[tuple[int, float], tuple[bool, str | None]] = {}
        self._uid = os.getuid()

    def scan(self) -> list[Sighting]:
        """The live processes of the session now; remembers each one seen."""
        live: list[tuple[tuple[int, float], psutil.Process, int]] = []
        for process in psutil.process_iter(["uids", "status", "create_time", "ppid"]):
            info = process.info
            try:
                if info["uids"].real != self._uid or info["status"] == psutil.STATUS_ZOMBIE:
                    continue
                if info["create_time"] < self.since:
                    continue
                key = (process.pid, info["create_time"])
                cached = self._env.get(key)
                if cached is None or cached == (True, None):
                    # Between fork and exec a child shows its parent's environment: a
                    # tagged process without a run id may yet exec into a training process.
                    env = process.environ()
                    if not env:
                        # Mid-execve /proc/PID/environ reads empty: not an answer yet, so
                        # nothing is remembered (it would say "not ours" for good).
                        continue
                    self._env[key] = (env.get(TAG_ENV) == self.tag, env.get(RUN_ID_ENV))
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            live.append((key, process, info["ppid"]))
        # Learn the run ids of tagged processes first: a process that lost the tag but
        # carries one of them is ours, whatever order the process table lists them in.
        self.run_ids.update(
            run_id for tagged, run_id in self._env.values() if tagged and run_id is not None
        )
        found = []
        for key, process, ppid in live:
            tagged, run_id = self._env[key]
            if not tagged and run_id not in self.run_ids:
                continue
            if key not in self.seen or self.seen[key].run_id != run_id:
                self.seen[key] = self._sighting(process, ppid, run_id)
            found.append(self.seen[key])
        return found

    @staticmethod
    def _sighting(process: psutil.Process, ppid: int, run_id: str | None) -> Sighting:
        try:
            parent = f"pid {ppid} `{_command(psutil.Process(ppid))}`"
        except psutil.NoSuchProcess:
            parent = f"pid {ppid} (gone)"
        return Sighting(process, _command(process), parent, run_id)

    def training(self) -> list[Sighting]:
        """Live processes started by a scenario run (they carry its run id)."""
        return [s for s in self.scan() if s.run_id is not None]

    def survivors(self, bound: float) -> list[Sighting]:
        """Processes of the session still alive after waiting up to ``bound`` for them to end."""
        deadline = time.monotonic() + bound
        while True:
            self.scan()
            alive = [s for s in self.seen.values() if _alive(s.process)]
            if not alive or time.monotonic() >= deadline:
                return alive
            psutil.wait_procs([s.process for s in alive], timeout=POLL)

    def kill_survivors(self) -> None:
        """Nothing this test started outlives it, even when it fails."""
        alive = [s.process for s in self.seen.values() if _alive(s.process)]
        for process in alive:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                continue
        psutil.wait_procs(alive, timeout=ABANDONED)


@dataclass
class Inner:
    """One inner pytest session and its watch."""

    popen: subprocess.Popen[bytes]
    watch: Watch
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_while_watching(self, bound: float) -> int:
        """Wait for the session to end, noting every process it starts meanwhile."""
        deadline = time.monotonic() + bound
        while time.monotonic() < deadline:
            self.watch.scan()
            try:
                return self.popen.wait(timeout=WATCH_POLL)
            except subprocess.TimeoutExpired:
                continue
        raise AssertionError(f"inner pytest still running after {bound:g}s:\n{self.output()}")

    def wait_for_training(self, *, with_child: bool, bound: float = INNER_BOUND) -> None:
        """Wait until a training process (and, if asked, its worker child) of the run exists."""
        deadline = time.monotonic() + bound
        while time.monotonic() < deadline:
            training = self.watch.training()
            pids = {s.process.pid for s in training}
            ready = [s for s in training if not with_child or _ppid(s.process) in pids]
            if ready:
                return
            try:
                code = self.popen.wait(timeout=POLL)
            except subprocess.TimeoutExpired:
                continue
            raise AssertionError(f"inner pytest ended ({code}) first:\n{self.output()}")
        raise AssertionError(f"no training process within {bound:g}s:\n{self.output()}")


def _ppid(process: psutil.Process) -> int | None:
    try:
        return process.ppid()
    except psutil.NoSuchProcess:
        return None


class Start(Protocol):
    def __call__(self, *args: str, cwd: Path | None = None) -> Inner: ...


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    """Start inner sessions; afterwards kill whatever is left of them, pass or fail."""
    started: list[Inner] = []

    def start_inner(*args: str, cwd: Path | None = None) -> Inner:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PYTEST_XDIST", "PYTEST_CURRENT_TEST", "FLRELIA_"))
        }
        env[TAG_ENV] = tag = uuid.uuid4().hex
        env["TMPDIR"] = str(temp_dir(tmp_path))  # where a job's flrelia-job-* goes
        log = tmp_path / f"inner-{len(started)}.log"
        since = time.time()
        with log.open("wb") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", "pytest", *PLUGIN_ARGS, *QUIET_ARGS, *args],
                cwd=cwd or tmp_path,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        inner = Inner(popen, Watch(tag, since), log)
        started.append(inner)
        return inner

    yield start_inner
    for inner in started:
        if inner.popen.poll() is None:
            inner.popen.kill()
            inner.popen.wait()
        inner.watch.kill_survivors()


def temp_dir(tmp_path: Path) -> Path:
    """The inner sessions' TMPDIR: a job makes its ``flrelia-job-*`` directory there."""
    path = tmp_path / "inner-tmp"
    path.mkdir(exist_ok=True)
    return path


def job_dirs_left(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in temp_dir(tmp_path).glob("flrelia-job-*"))


def scenario_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "case.scenario.yaml"
    path.write_text(text)
    return path


def recorded_pids(report_dir: Path) -> set[int]:
    """Training pids the runs recorded: every subprocess event's pid and every LAUNCH pid."""
    pids: set[int] = set()
    for path in report_dir.glob("*.timeline.jsonl"):
        for line in path.read_text().splitlines():
            event = Event.from_json(line)
            if event.process.startswith("train-"):
                pids.add(event.pid)
            if event.kind is EventKind.LAUNCH and "pid" in event.detail:
                pids.add(int(event.detail["pid"]))
    return pids


def still_ours(pids: set[int], watch: Watch) -> list[str]:
    """Recorded pids still held by a live process of the session (not a reused pid)."""
    left = []
    for pid in sorted(pids):
        try:
            process = psutil.Process(pid)
            if not _alive(process):
                continue
            env = process.environ()
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue
        if env.get(TAG_ENV) == watch.tag or env.get(RUN_ID_ENV) in watch.run_ids:
            left.append(f"pid {pid} `{_command(process)}`")
    return left


def assert_no_survivors(inner: Inner, bound: float) -> None:
    survivors = inner.watch.survivors(bound)
    assert survivors == [], (
        f"{len(survivors)} process(es) of the run outlived it by {bound:g}s:\n"
        + "\n".join(f"  {s.describe()}" for s in survivors)
        + f"\ninner output:\n{inner.output()[-4000:]}"
    )


@pytest.mark.slow
def test_shipped_suite_under_xdist_leaves_no_process(start: Start, tmp_path: Path) -> None:
    report = tmp_path / "report"
    inner = start(str(SCENARIOS), "-n", "2", "-q", f"--flrelia-report={report}", cwd=ROOT)

    code = inner.wait_while_watching(SUITE_BOUND)

    output = inner.output()
    # Scenarios with tight bounds may fail on a loaded host; what counts here is what is left.
    assert code in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED), output
    pids = recorded_pids(report)
    assert len(list(report.glob("*.timeline.jsonl"))) >= 20, output
    assert pids, "the runs recorded no training process"
    assert inner.watch.run_ids, "no training process of the run was ever seen"
    assert_no_survivors(inner, SETTLE)
    assert still_ours(pids, inner.watch) == []


def test_scenario_over_its_bound_is_stopped_reported_and_leaves_no_process(
    start: Start, tmp_path: Path
) -> None:
    path = scenario_file(tmp_path, OVER_BOUND)
    report = tmp_path / "report"
    inner = start(str(path), f"--flrelia-report={report}")

    code = inner.wait_while_watching(INNER_BOUND)

    output = inner.output()
    assert code == pytest.ExitCode.TESTS_FAILED, output
    assert "invariant within_bound" in output
    assert "stopped by the harness" in output
    pids = recorded_pids(report)
    assert len(pids) >= 1
    assert_no_survivors(inner, SETTLE)
    assert still_ours(pids, inner.watch) == []


@pytest.mark.parametrize("method", ["signal", "thread"])
def test_pytest_timeout_cuts_the_run_cleanly_and_writes_its_report(
    start: Start, tmp_path: Path, method: str
) -> None:
    """Either method: the run is ended like a run past its bound (no os._exit for the
    thread method), its report is written and nothing of it is left, not even its
    job directory."""
    path = scenario_file(tmp_path, LONG_RUN)
    report = tmp_path / "report"
    inner = start(
        str(path), "--timeout=3", f"--timeout-method={method}", f"--flrelia-report={report}"
    )

    code = inner.wait_while_watching(INNER_BOUND)

    output = inner.output()
    assert code == pytest.ExitCode.TESTS_FAILED, output
    assert (
        "scenario long-stuck-run (" in output and ") was cut by pytest-timeout against " in output
    )
    assert "Timeout (>3.0s) from pytest-timeout." in output
    timeline = report / "long-stuck-run.timeline.jsonl"
    assert f"its timeline so far: {timeline}, {report / 'long-stuck-run.mmd'}" in output
    assert "  pytest 'case.scenario.yaml::long-stuck-run'" in output  # the reproduce line
    kinds = [Event.from_json(line).kind for line in timeline.read_text().splitlines()]
    assert EventKind.LAUNCH in kinds and kinds.count(EventKind.ERROR) >= 1, kinds
    assert inner.watch.run_ids, "the scenario never started a training process"
    assert_no_survivors(inner, SETTLE)
    assert job_dirs_left(tmp_path) == []


def test_pytest_timeout_cut_without_a_report_dir_says_how_to_keep_one(
    start: Start, tmp_path: Path
) -> None:
    path = scenario_file(tmp_path, LONG_RUN)
    inner = start(str(path), "--timeout=3", "--timeout-method=thread")

    code = inner.wait_while_watching(INNER_BOUND)

    assert code == pytest.ExitCode.TESTS_FAILED, inner.output()
    assert "rerun with --flrelia-report=DIR to keep it" in inner.output()
    assert_no_survivors(inner, SETTLE)
    assert job_dirs_left(tmp_path) == []


JOB_IN_A_DAEMON_THREAD = """\
import sys, threading
from pytest_flrelia.contract import failpoints
from pytest_flrelia.contract.job import JobConfig, TensorSpec, Timeouts
from reference_impl.job import run_job
from pytest_flrelia.contract.timeline import EventKind, Timeline

timeline = Timeline("server")
launched = threading.Event()
timeline.subscribe(lambda e: launched.set() if e.kind is EventKind.LAUNCH else None)
config = JobConfig(tensors=TensorSpec(count=1, size_bytes=16384), timeouts=Timeouts.fast())
failpoints.configure("server.before_download=hang")
threading.Thread(target=run_job, args=(config,), kwargs={"timeline": timeline}, daemon=True).start()
assert launched.wait(30), "no training process launched"
print("launched", flush=True)
# The main thread ends here: the job thread is frozen mid-run, its finally never runs.
"""


def test_a_job_frozen_by_the_interpreter_exit_leaves_no_job_directory(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(temp_dir(tmp_path)), TAG_ENV: uuid.uuid4().hex}
    done = subprocess.run(
        [sys.executable, "-c", JOB_IN_A_DAEMON_THREAD],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    watch = Watch(env[TAG_ENV], time.time() - 60)
    try:
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "launched"
        assert job_dirs_left(tmp_path) == []
    finally:
        watch.scan()
        watch.kill_survivors()  # the training process's watchdog ends it anyway


@pytest.mark.parametrize(
    ("stop", "shown"),
    [(signal.SIGINT, "KeyboardInterrupt"), (signal.SIGTERM, "Terminated")],
    ids=["sigint", "sigterm"],
)
def test_sigint_or_sigterm_mid_scenario_unwinds_and_leaves_no_process(
    start: Start, tmp_path: Path, stop: signal.Signals, shown: str
) -> None:
    """Ctrl-C, and SIGTERM, which is how CI runners and ``timeout(1)`` stop a job: the
    plugin makes it unwind as Ctrl-C does (Python's default action would end pytest at
    once, with no cleanup, and leave the run's processes behind)."""
    path = scenario_file(tmp_path, LONG_RUN)
    inner = start(str(path))
    inner.wait_for_training(with_child=True)
    assert len(job_dirs_left(tmp_path)) == 1  # the run's own, while it runs

    inner.popen.send_signal(stop)
    code = inner.wait_while_watching(INNER_BOUND)

    assert code == pytest.ExitCode.INTERRUPTED, inner.output()
    assert shown in inner.output()
    assert_no_survivors(inner, SETTLE)
    assert job_dirs_left(tmp_path) == []


def test_sigkill_mid_scenario_training_process_and_worker_child_end(
    start: Start, tmp_path: Path
) -> None:
    path = scenario_file(tmp_path, LONG_RUN)
    inner = start(str(path))
    inner.wait_for_training(with_child=True)
    family = [s.process.pid for s in inner.watch.training()]

    inner.popen.kill()
    code = inner.popen.wait(INNER_BOUND)

    assert code == -signal.SIGKILL
    assert len(family) >= 2  # the training process and its worker child
    assert_no_survivors(inner, ABANDONED)


def test_watch_sees_a_tagged_process_and_its_run_id(tmp_path: Path) -> None:
    """The watch itself: a tagged process is seen, a run id it carries is learnt, and an
    untagged process with that run id is then counted as ours."""
    tag = uuid.uuid4().hex
    watch = Watch(tag, time.time())
    run_id = uuid.uuid4().hex
    script = "import sys; sys.stdin.read()"
    base = {k: v for k, v in os.environ.items() if k not in (TAG_ENV, RUN_ID_ENV)}
    tagged = subprocess.Popen(
        [sys.executable, "-c", script],
        env={**base, TAG_ENV: tag, RUN_ID_ENV: run_id},
        stdin=subprocess.PIPE,
    )
    untagged = subprocess.Popen(
        [sys.executable, "-c", script], env={**base, RUN_ID_ENV: run_id}, stdin=subprocess.PIPE
    )
    stranger = subprocess.Popen([sys.executable, "-c", script], env=base, stdin=subprocess.PIPE)
    try:
        seen = {s.process.pid for s in watch.scan()}
        assert seen == {tagged.pid, untagged.pid}
        assert watch.run_ids == {run_id}
        for popen in (tagged, untagged, stranger):
            assert popen.stdin is not None
            popen.stdin.close()
            popen.wait(10)
        assert watch.survivors(SETTLE) == []
    finally:
        for popen in (tagged, untagged, stranger):
            if popen.poll() is None:
                popen.kill()
                popen.wait()


def test_watch_learns_the_run_id_a_process_gets_at_exec() -> None:
    """A child seen between fork and exec shows its parent's environment: the watch must
    still learn the run id once the child has exec'd into a training process."""
    tag = uuid.uuid4().hex
    watch = Watch(tag, time.time())
    run_id = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if k != RUN_ID_ENV}
    child = subprocess.Popen(
        [sys.executable, "-c", EXEC_INTO_TRAINING, run_id, RUN_ID_ENV],
        env={**env, TAG_ENV: tag},
        stdin=subprocess.PIPE,
        text=True,
    )
    try:
        assert [s.process.pid for s in watch.scan()] == [child.pid]
        assert watch.training() == []
        assert child.stdin is not None
        child.stdin.write("exec\n")
        child.stdin.flush()
        deadline = time.monotonic() + INNER_BOUND
        while not watch.training() and time.monotonic() < deadline:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=POLL)
        assert [s.process.pid for s in watch.training()] == [child.pid]
        assert watch.run_ids == {run_id}
        child.stdin.close()
        child.wait(10)
        assert watch.survivors(SETTLE) == []
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
