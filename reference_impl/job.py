"""Run a whole federated job: R rounds over S sites, in this process plus one
real training subprocess per site (per round, or for all rounds).

:class:`Runtime` names the parts a job is built from.  The correct parts are
the defaults; a known-bug variant is a :class:`Runtime` with one part replaced.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pytest_flrelia.contract import failpoints
from pytest_flrelia.contract.events import client_lane, harness_lane, server_lane
from pytest_flrelia.contract.job import JobConfig
from pytest_flrelia.contract.result import JobResult
from pytest_flrelia.contract.timeline import TIMELINE_ENV, EventKind, Timeline
from pytest_flrelia.contract.timeout_checks import warn_timeout_conflicts
from reference_impl.agent import (
    AGENT_CLASS_ENV,
    DEFAULT_AGENT_CLASS,
    DEFAULT_JOB,
    AgentSettings,
)
from reference_impl.download import Downloader
from reference_impl.executor import (
    ClientAPILauncherExecutor,
    ExecutionError,
    LauncherExecutor,
)
from reference_impl.launcher import SubprocessLauncher
from reference_impl.pipe import (
    PIPE_ADDRESS_ENV,
    PIPE_SECRET_ENV,
    Pipe,
    address_to_env,
    secret_to_env,
)
from reference_impl.process_stop import GroupStopStrategy, StopStrategy
from reference_impl.server import RoundFailed, Server, Submission
from reference_impl.task_exchanger import TaskExchanger
from reference_impl.watchdog import CLIENT_PID_ENV
from reference_impl.wire import new_secret

log = logging.getLogger(__name__)

TRAIN_COMMAND = (sys.executable, "-m", "reference_impl.train_script")
SITE_JOIN_TIMEOUT = 30.0
JOB_DIR_PREFIX = "flrelia-job-"
DEFAULT_JOB_NAME = DEFAULT_JOB
"""The workspace directory of a job that gives no ``name``."""
SITE_TIMELINE = "timeline.jsonl"
"""In a site's workspace: the file its training processes append their events to."""


def site_workspace(directory: Path, config: JobConfig, site: str) -> Path:
    """``<job dir>/<job name>/<site name>``: where a site's training process runs and
    writes its timeline, as a real client's workspace is named after job and site; a
    launcher that quotes or splits either name badly loses the process's events."""
    return directory / (config.name or DEFAULT_JOB_NAME) / site


class JobDirectories:
    """The ``flrelia-job-*`` directories of running jobs, each removed when its job ends,
    and any still here when the interpreter exits.

    A job run in a daemon thread (as the harness runs it) may be frozen by the
    interpreter's exit before its ``finally`` runs, after Ctrl-C for instance;
    ``atexit`` handlers still run then.  (Nothing survives ``os._exit``.)
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: set[Path] = set()
        atexit.register(self.remove_all)

    def create(self) -> Path:
        path = Path(tempfile.mkdtemp(prefix=JOB_DIR_PREFIX))
        with self._lock:
            self._live.add(path)
        return path

    def remove(self, path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)
        with self._lock:
            self._live.discard(path)

    def remove_all(self) -> None:
        with self._lock:
            left = list(self._live)
        for path in left:
            self.remove(path)


JOB_DIRECTORIES = JobDirectories()
"""One per process: the exit hook must know every job's directory."""


@dataclass(frozen=True)
class Runtime:
    """The parts of the client side.  Replace one to build a variant."""

    executor_class: type[LauncherExecutor] = ClientAPILauncherExecutor
    exchanger_class: type[TaskExchanger] = TaskExchanger
    launcher_class: type[SubprocessLauncher] = SubprocessLauncher
    stop_strategy: Callable[[float], StopStrategy] = GroupStopStrategy
    agent_class: str = DEFAULT_AGENT_CLASS
    """Import path ``module:Class`` of the agent, resolved inside the subprocess."""
    command: tuple[str, ...] = TRAIN_COMMAND

    def with_parts(self, **parts: object) -> Runtime:
        return replace(self, **parts)  # type: ignore[arg-type]


class SiteRunner:
    """One site's client runner: take a task, execute it, submit the result."""

    def __init__(self, site: str, server: Server, executor: LauncherExecutor, pipe: Pipe) -> None:
        self.site = site
        self._server = server
        self._executor = executor
        self._pipe = pipe
        self.error: str | None = None
        self.thread = threading.Thread(target=self._run, name=f"client-{site}", daemon=True)

    @property
    def executor(self) -> LauncherExecutor:
        return self._executor

    def _run(self) -> None:
        tasks = self._server.task_queues[self.site]
        try:
            while True:
                task = tasks.get()
                if task is None:
                    return
                try:
                    result = self._executor.execute(task)
                except ExecutionError as exc:
                    self.error = str(exc)
                    self._server.submit(Submission(self.site, task.round, error=str(exc)))
                    return
                self._server.submit(Submission(self.site, task.round, result=result))
        finally:
            try:
                self._executor.finalize()
            finally:
                self._pipe.close()


def run_job(
    config: JobConfig,
    *,
    runtime: Runtime | None = None,
    timeline: Timeline | None = None,
    abort: threading.Event | None = None,
    subprocess_env: Mapping[str, str] | None = None,
    work_dir: Path | None = None,
    on_site_ready: Callable[[str, LauncherExecutor], None] | None = None,
) -> JobResult:
    """Run ``config`` to completion (or first failure) and return what happened.

    ``subprocess_env`` is added to every training process's environment (the
    harness passes ``FLRELIA_FAILPOINTS`` and script behaviours this way).
    ``abort`` ends the job early: every wait wakes, every process is stopped.
    Timeouts that contradict each other are a ``TimeoutConflictWarning`` (the job runs).
    """
    warn_timeout_conflicts(config.timeouts)
    if work_dir is not None:
        return _run_job(
            config, runtime, timeline, abort, subprocess_env, work_dir, on_site_ready
        )
    directory = JOB_DIRECTORIES.create()
    try:
        return _run_job(
            config, runtime, timeline, abort, subprocess_env, directory, on_site_ready
        )
    finally:
        JOB_DIRECTORIES.remove(directory)


def _run_job(
    config: JobConfig,
    runtime: Runtime | None,
    timeline: Timeline | None,
    abort: threading.Event | None,
    subprocess_env: Mapping[str, str] | None,
    directory: Path,
    on_site_ready: Callable[[str, LauncherExecutor], None] | None,
) -> JobResult:
    runtime = runtime or Runtime()
    timeline = timeline or Timeline(server_lane())
    abort = abort or threading.Event()
    started = time.monotonic()
    named: dict[str, Any] = {} if config.name is None else {"name": config.name}
    timeline.record(
        EventKind.JOB_START,
        sites=config.sites,
        rounds=config.rounds,
        launch_once=config.launch_once,
        **named,
    )
    restore_recorder = _record_failpoints(timeline)
    server = Server(
        config,
        timeline=timeline.for_process(server_lane()),
        downloader=Downloader(
            retries=config.download_retries,
            retry_delay=config.timeouts.download_retry_delay,
            connect_timeout=config.timeouts.download_connect,
            timeline=timeline.for_process(server_lane()),
        ),
        abort=abort,
    )
    workspaces = {site: site_workspace(directory, config, site) for site in config.site_names()}
    for workspace in workspaces.values():
        workspace.mkdir(parents=True, exist_ok=True)
    runners = [
        _site_runner(site, config, runtime, server, timeline, abort, subprocess_env, workspace)
        for site, workspace in workspaces.items()
    ]
    error: str | None = None
    try:
        for runner in runners:
            if on_site_ready is not None:
                on_site_ready(runner.site, runner.executor)
            runner.thread.start()
        server.run()
    except RoundFailed as exc:
        error = str(exc)
        abort.set()
    finally:
        for runner in runners:
            runner.thread.join(SITE_JOIN_TIMEOUT)
            if runner.thread.is_alive():
                log.error(
                    "%s: client runner did not finish within %ss", runner.site, SITE_JOIN_TIMEOUT
                )
        restore_recorder()
        for workspace in workspaces.values():
            timeline.merge_file(workspace / SITE_TIMELINE)
    ok = (
        error is None
        and all(r.ok for r in server.outcomes)
        and len(server.outcomes) == config.rounds
    )
    timeline.record(EventKind.JOB_END, ok=ok, error=error)
    return JobResult(
        config=config,
        ok=ok,
        error=error,
        rounds=server.outcomes,
        global_model=server.model,
        timeline=timeline,
        seconds=time.monotonic() - started,
        site_errors={r.site: r.error for r in runners if r.error},
    )


def _site_runner(
    site: str,
    config: JobConfig,
    runtime: Runtime,
    server: Server,
    timeline: Timeline,
    abort: threading.Event,
    subprocess_env: Mapping[str, str] | None,
    workspace: Path,
) -> SiteRunner:
    client_timeline = timeline.for_process(client_lane(site))
    secret = new_secret()
    pipe = Pipe.listen(secret, name=f"client-{site}", timeline=client_timeline)
    settings = AgentSettings(
        site=site,
        launch_once=config.launch_once,
        download_complete_timeout=config.timeouts.download_complete,
        heartbeat_interval=config.timeouts.heartbeat_interval,
        heartbeat_timeout=config.timeouts.heartbeat,
        chunk_bytes=config.chunk_bytes,
        job=config.name or DEFAULT_JOB_NAME,
    )
    env = {
        **(subprocess_env or {}),
        **settings.to_env(),
        PIPE_ADDRESS_ENV: address_to_env(pipe.address),
        PIPE_SECRET_ENV: secret_to_env(secret),
        TIMELINE_ENV: str(workspace / SITE_TIMELINE),
        AGENT_CLASS_ENV: runtime.agent_class,
        CLIENT_PID_ENV: str(os.getpid()),
    }
    launcher = runtime.launcher_class(
        list(runtime.command),
        launch_once=config.launch_once,
        name=site,
        stop_strategy=runtime.stop_strategy(config.timeouts.stop_grace),
        timeline=client_timeline,
        site=site,
        cwd=workspace,
    )
    exchanger = runtime.exchanger_class(
        pipe, site=site, timeouts=config.timeouts, timeline=client_timeline
    )
    executor = runtime.executor_class(
        site=site,
        launcher=launcher,
        exchanger=exchanger,
        timeouts=config.timeouts,
        timeline=client_timeline,
        launch_env=env,
        abort=abort,
    )
    return SiteRunner(site, server, executor, pipe)


def _record_failpoints(timeline: Timeline) -> Callable[[], None]:
    """Make every failpoint hit in this process a timeline event, until restored."""
    failpoints.set_recorder(failpoints.timeline_recorder(timeline.for_process(harness_lane())))
    return lambda: failpoints.set_recorder(None)
