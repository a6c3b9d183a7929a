"""The harness side of the target with stand-in runners (no nvflare needed): a runner's
events reach the timeline live, an abort kills its whole process group, and a runner
that dies without a result is a harness error, not a verdict."""

from __future__ import annotations

import json
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

from pytest_flrelia.contract.job import JobConfig
from pytest_flrelia.contract.result import JobResult
from pytest_flrelia.contract.target import Abort, RunContext
from pytest_flrelia.contract.timeline import Event, EventKind, Timeline
from pytest_flrelia.errors import TargetRunnerError
from pytest_flrelia.targets.nvflare import target as nvtarget
from pytest_flrelia.targets.nvflare import wiring

WAIT = 30.0

FAKE_RUNNER = textwrap.dedent('''
    """A stand-in runner: records an event, starts a grandchild, then hangs (or exits)."""
    import json, os, signal, subprocess, sys, time
    from pathlib import Path
    from pytest_flrelia.contract.timeline import EventKind, Timeline

    run = json.loads(Path(sys.argv[1]).read_text())
    options = run["options"]
    mode = os.environ["FAKE_MODE"]
    if mode == "die":
        print("the fake runner dies", flush=True)
        sys.exit(7)
    timeline = Timeline("client-site-1", sink=Path(options["events_dir"]) / "runner.jsonl")
    grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    Path(options["workdir"], "grandchild.pid").write_text(str(grandchild.pid))
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    timeline.record(EventKind.LAUNCH, site="site-1", round=1, pid=grandchild.pid)
    if mode == "result":
        grandchild.kill()
        grandchild.wait()
        Path(options["workdir"], "result.json").write_text(json.dumps({
            "ok": True, "error": None, "rounds": [], "site_errors": {}, "seconds": 0.1}))
        sys.exit(0)
    time.sleep(600)
''')


@pytest.fixture
def fake_runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "fake_nvflare_runner.py").write_text(FAKE_RUNNER)
    monkeypatch.setattr(wiring, "RUNNER_MODULE", "fake_nvflare_runner")
    return modules


def _run(tmp_path: Path, modules: Path, mode: str, timeline: Timeline,
         abort: Abort) -> nvtarget.RunnerProcess:
    workdir = tmp_path / "run"
    workdir.mkdir()
    context = RunContext(
        timeline=timeline, abort=abort,
        env={"PYTHONPATH": f"{modules}:{Path.cwd()}", "FAKE_MODE": mode},
        workdir=workdir, deadline=time.monotonic() + WAIT, variant=None,
    )
    return nvtarget.RunnerProcess(JobConfig(), (), context, "cell")


@pytest.mark.usefixtures("no_leftover_children")
def test_an_abort_kills_a_runner_that_ignores_sigterm_and_its_children(
    tmp_path: Path, fake_runner: Path
) -> None:
    timeline = Timeline("server")
    abort = Abort()
    launched = threading.Event()

    def on_event(event: Event) -> None:
        if event.kind is EventKind.LAUNCH:
            launched.set()

    timeline.subscribe(on_event)
    runner = _run(tmp_path, fake_runner, "stubborn", timeline, abort)
    box: dict[str, JobResult] = {}
    thread = threading.Thread(target=lambda: box.update(result=runner.run()), daemon=True)
    thread.start()
    assert launched.wait(WAIT), "the runner's event never reached the timeline while it ran"
    grandchild = int((tmp_path / "run" / "grandchild.pid").read_text())
    assert psutil.pid_exists(grandchild)
    started = time.monotonic()
    abort.set()
    thread.join(WAIT)
    assert not thread.is_alive()
    assert time.monotonic() - started < nvtarget.STOP_WAIT + 5.0
    assert not box["result"].ok and "aborted" in str(box["result"].error)
    # run() returns only once its group is empty (CI once saw the grandchild still
    # running here when run() returned right after sending SIGKILL).
    try:
        gone = psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        gone = True
    assert gone, "the runner's child outlived the abort"


@pytest.mark.usefixtures("no_leftover_children")
def test_a_runner_that_dies_without_a_result_is_a_harness_error(
    tmp_path: Path, fake_runner: Path
) -> None:
    runner = _run(tmp_path, fake_runner, "die", Timeline("server"), Abort())
    with pytest.raises(TargetRunnerError, match="exited 7 without a result") as err:
        runner.run()
    assert "the fake runner dies" in str(err.value)


@pytest.mark.usefixtures("no_leftover_children")
def test_a_result_becomes_the_job_result(tmp_path: Path, fake_runner: Path) -> None:
    timeline = Timeline("server")
    result = _run(tmp_path, fake_runner, "result", timeline, Abort()).run()
    assert result.ok and result.rounds == [] and result.timeline is timeline
    assert [e.kind for e in timeline.events()] == [EventKind.LAUNCH]
    assert json.loads((tmp_path / "run" / "run.json").read_text())["options"]["pipe"] == "cell"
