""":class:`NVFlareTarget`: the shipped scenarios against the real NVFlare launcher stack.

The harness process imports no nvflare: it reads the installed version from the package
metadata (:mod:`.version`), writes the run to a file (:mod:`.codec`) and starts one
runner process per job (``python -m pytest_flrelia.targets.nvflare.runner``, in its own
session, with the run tag in its environment).  While the runner and the training
processes NVFlare launches run, their event files are tailed into the harness's timeline
(:mod:`.tail`), so live checks and triggered faults see events as they happen.  The
runner's ``result.json`` and ``model.npz`` become the :class:`JobResult`.

The entry point ``flrelia.targets: nvflare`` names :func:`.entry.make_target`;
``FLRELIA_NVFLARE_PIPE=file`` makes it build the target with FilePipe instead of CellPipe.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from pytest_flrelia.contract.faults import FaultSpec
from pytest_flrelia.contract.job import JobConfig
from pytest_flrelia.contract.processes import group_members, wait_gone
from pytest_flrelia.contract.result import Array, JobResult, RoundOutcome
from pytest_flrelia.contract.target import RunContext, TargetInfo, Timing
from pytest_flrelia.contract.timeline import EventKind
from pytest_flrelia.errors import TargetRunnerError
from pytest_flrelia.targets.nvflare import codec, fault_support, version, wiring
from pytest_flrelia.targets.nvflare.known_issues import KNOWN_ISSUES
from pytest_flrelia.targets.nvflare.races import KNOWN_RACES
from pytest_flrelia.targets.nvflare.tail import Tailer
from pytest_flrelia.targets.reference.oracle import ReferenceModelOracle

LOG = logging.getLogger(__name__)
NAME = "nvflare"
PIPES = ("cell", "file")
STOP_WAIT = 3.0
"""After the abort's SIGTERM: how long the runner may take to stop its job before its
process group is killed (the abort hook runs before the harness's own sweep)."""
GROUP_WAIT = 5.0
"""After the group's SIGKILL: how long an aborted run waits for every member to be gone
before it returns (SIGKILL is asynchronous; a grandchild may still run an instant after)."""
LOG_TAIL = 40
"""Lines of the runner's log a harness error shows."""

EVENTS: frozenset[EventKind] = frozenset({
    EventKind.JOB_START, EventKind.JOB_END, EventKind.ROUND_START, EventKind.ROUND_END,
    EventKind.LAUNCH, EventKind.LAUNCH_SKIPPED, EventKind.INIT, EventKind.TASK_SENT,
    EventKind.TASK_RECEIVED, EventKind.RESULT_SENT, EventKind.RESULT_RECEIVED,
    EventKind.SUBMIT, EventKind.DOWNLOAD_START, EventKind.DOWNLOAD_DONE,
    EventKind.DOWNLOAD_FAILED, EventKind.TENSOR_SERVED, EventKind.GATE_WAIT,
    EventKind.GATE_OPEN, EventKind.GATE_TIMEOUT, EventKind.GATE_CLOSED, EventKind.AGGREGATED,
    EventKind.STOP_REQUESTED, EventKind.SIGNAL_SENT, EventKind.EXIT, EventKind.REAPED,
    EventKind.DEFERRED_STOP_START, EventKind.EXIT_SEEN, EventKind.DEFERRED_STOP_DONE,
    EventKind.ROUND_BOUNDARY_WAIT, EventKind.HANDLER_CREATED, EventKind.HANDLER_STOPPED,
    EventKind.HANDLER_PAUSED, EventKind.HANDLER_RESUMED,
    EventKind.STATUS_EVENT, EventKind.STATUS_IGNORED, EventKind.PIPE_CLEARED,
    EventKind.FAULT, EventKind.ERROR,
})
"""What this target records (``docs/nvflare-wiring.md`` says how each is observed).  Not
recorded: ``init_seen`` (NVFlare's executor logs no HELLO), ``download_chunk`` /
``download_retry`` (one item per array, retries inside ``download_object``),
``late_message``, ``frame_rejected``, ``failpoint`` (no such things here)."""

MAPPING_NOTES: Mapping[str, str] = MappingProxyType({
    "heartbeat": f"raised to at least {wiring.HEARTBEAT_MIN_TIMEOUT:g}s: NVFlare's child "
                 f"sends a heartbeat every {wiring.HEARTBEAT_FLOOR:g}s whatever the job says",
    "heartbeat_interval": "not mapped: the child's interval is fixed at 5 s",
    "download_complete": f"raised by {wiring.DOWNLOAD_MONITOR_PERIOD:g}s: the gate opens "
                         "only when DownloadService's monitor looks, every 5 s, so a wait "
                         "as short as its period races the first look",
    "pre_init": f"raised to at least {wiring.PRE_INIT_FLOOR:g}s: a fresh child imports "
                "nvflare and joins CellNet first",
    "chunk_bytes": "not mapped: NVFlare sends one item per array (2 MiB chunks)",
    "stop_grace": "not mapped: SubprocessLauncher terminates and never escalates",
    "stop_poll": "not mapped: the deferred stop polls every 1 s",
    "stop_wait": "with launch_once, SubprocessLauncher's shutdown_timeout (its wait for a "
                 "natural exit at END_RUN), raised as download_complete is where there is "
                 "a gate; per round not mapped: the deferred stop waits "
                 "the (raised) download_complete",
    "execution": "task_wait_timeout, moved up by as much as the heartbeat timeout was "
                 "raised: NVFlare notices a silent peer by its heartbeat, not a task timeout",
    "download_retries": "not mapped: download_object retries 3 times",
})
"""How the job config maps onto NVFlare (what is not mapped, and why)."""


TIMING = Timing(
    exit_after_release=1.5,
    poll=1.0,
    gate_lag=5.0,
    launch=3.0,
    task_lag=5.0,
    heartbeat_floor=wiring.HEARTBEAT_MIN_TIMEOUT + wiring.HEARTBEAT_FLOOR,
)
"""NVFlare's own intervals, read from its code and measured (docs/nvflare-wiring.md):
the deferred stop polls every 1 s (``time.sleep(1.0)``); a gate opens only when
``DownloadService._monitor_tx`` (``time.sleep(5.0)`` per loop) signals FINISHED; a
launch-once child picks its next task up within its agent's ``get_task`` poll (0.5 s)
after its pipe handler read it (0.5 s); a child starts in ~1-1.5 s unloaded (nvflare
import, CellNet connect; 3 s declared, up to 8 s measured under load); its first task
can wait one 5 s heartbeat; a silent peer shows after the heartbeat timeout (at least
30 s here) plus one 5 s interval."""


_DIED = (
    r"the task was aborted: (Launcher failed|launcher completed|Launcher already exited|"
    r"execution exception in TaskExchanger)"
)
ERROR_ALIASES: Mapping[str, str] = MappingProxyType({
    "failed to download from site-1": rf"failed to download from site-1|site-1: {_DIED}",
    "failed to download from site-2": rf"failed to download from site-2|site-2: {_DIED}",
    "site-2: training process ended": rf"site-2: {_DIED}",
    "pipe handler stopped": r"the task was aborted: (.*; )?task pipe stopped",
})
"""The scenarios' error patterns in NVFlare's words.  A process that dies before the
server pulled its tensors: NVFlare's launcher monitor sees the exit first (every 10 ms)
and aborts the task ("Launcher failed at time ...", then "execution exception in
TaskExchanger"), so the round fails with the site's aborted task, before any pull.  A
pipe gone silent: the executor logs "task pipe stopped! aborting task."."""


def _info(installed: version.Installed, pipe: str) -> TargetInfo:
    faults, unsupported = fault_support.declarations(installed.text)
    return TargetInfo(
        name=NAME,
        faults=faults,
        events=EVENTS,
        variants=MappingProxyType({
            installed.text: f"the installed {installed.label}, {pipe} pipe",
        }),
        timing=TIMING,
        oracle=ReferenceModelOracle(),
        version=installed.label,
        unsupported=unsupported,
        known_issues=KNOWN_ISSUES,
        known_races=KNOWN_RACES,
        error_aliases=ERROR_ALIASES,
    )


class NVFlareTarget:
    """The installed NVFlare's launcher stack, with CellPipe (default) or FilePipe."""

    def __init__(self, pipe: str = "cell", installed: version.Installed | None = None) -> None:
        if pipe not in PIPES:
            raise ValueError(f"pipe must be one of {PIPES}, not {pipe!r}")
        self.installed = installed or version.installed()
        self.pipe = pipe
        self.info = _info(self.installed, pipe)

    def run(self, job: JobConfig, faults: Sequence[FaultSpec], context: RunContext) -> JobResult:
        return RunnerProcess(job, tuple(faults), context, self.pipe).run()


RunnerDied = TargetRunnerError
"""The runner ended without a result and nobody aborted it: a defect of this target."""


@dataclass
class RunnerProcess:
    """One job in its runner process, followed from the harness."""

    job: JobConfig
    faults: tuple[FaultSpec, ...]
    context: RunContext
    pipe: str

    def run(self) -> JobResult:
        started = time.monotonic()
        workdir = self.context.workdir
        events_dir = workdir / "events"
        events_dir.mkdir(parents=True, exist_ok=True)
        run_file = workdir / "run.json"
        codec.write_run(run_file, self.job, self.faults, {
            "workdir": str(workdir), "events_dir": str(events_dir), "pipe": self.pipe,
        })
        tailer = Tailer(events_dir, self.context.timeline).start()
        log_path = workdir / wiring.RUNNER_LOG
        env = {**os.environ, **self.context.env, wiring.RUN_ENV: str(run_file)}
        aborted = False
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-u", "-m", wiring.RUNNER_MODULE, str(run_file)],
                stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=str(workdir), env=env, start_new_session=True,
            )

            def on_abort() -> None:
                nonlocal aborted
                aborted = True
                _stop(process)

            unregister = self.context.abort.on_abort(on_abort)
            try:
                returncode = process.wait()
            finally:
                unregister()
                if process.poll() is None:  # an exception on the way out: nothing may stay
                    _kill_group(process)
                    process.wait()
                if aborted:
                    _empty_group(process)
                tailer.stop()
        _keep_log(log_path)
        if tailer.broken:
            raise RunnerDied("unreadable events:\n" + "\n".join(tailer.broken[:5]))
        result_path = workdir / wiring.RESULT_FILE
        if not result_path.exists():
            if aborted or self.context.abort.is_set():
                return self._failed("the run was aborted before the job ended", started)
            raise RunnerDied(
                f"the nvflare runner exited {returncode} without a result:\n"
                + _tail(log_path)
            )
        return self._result(json.loads(result_path.read_text()), workdir, started)

    def _result(self, raw: dict[str, Any], workdir: Path, started: float) -> JobResult:
        model: dict[str, Array] = {}
        model_path = workdir / wiring.MODEL_FILE
        if model_path.exists():
            with np.load(model_path) as saved:
                model = {name: saved[name] for name in saved.files}
        rounds = [_round(r) for r in raw["rounds"]]
        return JobResult(
            config=self.job,
            ok=bool(raw["ok"]),
            error=raw.get("error"),
            rounds=rounds,
            global_model=model,
            timeline=self.context.timeline,
            seconds=time.monotonic() - started,
            site_errors={str(k): str(v) for k, v in (raw.get("site_errors") or {}).items()},
        )

    def _failed(self, error: str, started: float) -> JobResult:
        return JobResult(
            config=self.job, ok=False, error=error, rounds=[], global_model={},
            timeline=self.context.timeline, seconds=time.monotonic() - started,
        )


def _round(raw: Mapping[str, Any]) -> RoundOutcome:
    order = {
        str(name): [(str(s), int(a), int(b)) for s, a, b in ranges]
        for name, ranges in (raw.get("aggregation_order") or {}).items()
    }
    return RoundOutcome(
        round=int(raw["round"]), kind=str(raw["kind"]), ok=bool(raw["ok"]),
        error=raw.get("error"), seconds=float(raw["seconds"]),
        checksums=dict(raw.get("checksums") or {}),
        bytes_downloaded=int(raw.get("bytes_downloaded") or 0), aggregation_order=order,
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Ask the runner to stop (it launches nothing more, ends its sites), then kill its
    process group: what it started dies with it."""
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(STOP_WAIT)
    _kill_group(process)


def _empty_group(process: subprocess.Popen[bytes]) -> None:
    """Kill the exited runner's group and wait (bounded) until no member is left: an
    aborted run returns only once what it started is gone.  The abort's own kill may
    not have been sent yet (the runner can exit on its SIGTERM first), and SIGKILL is
    asynchronous: a grandchild may still run an instant after it."""
    _kill_group(process)
    stragglers = wait_gone(group_members(process.pid), GROUP_WAIT)
    if stragglers:
        LOG.warning("after the abort, %d of the runner's group outlived SIGKILL by %.0f s: %s",
                    len(stragglers), GROUP_WAIT, ", ".join(str(p.pid) for p in stragglers))


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    from pytest_flrelia.contract import seams  # noqa: PLC0415

    with contextlib.suppress(ProcessLookupError, PermissionError):
        seams.killpg(process.pid, signal.SIGKILL)


def _keep_log(path: Path) -> None:
    """Copy the runner's log to ``$FLRELIA_NVFLARE_LOGS`` (if set): NVFlare's own lines."""
    keep = os.environ.get(wiring.LOGS_ENV)
    if not keep or not path.exists():
        return
    target = Path(keep)
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, target / f"{path.parent.name}-{wiring.RUNNER_LOG}")


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(lines[-LOG_TAIL:])


__all__ = ["EVENTS", "MAPPING_NOTES", "NAME", "NVFlareTarget", "RunnerDied"]
