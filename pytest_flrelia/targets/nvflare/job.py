"""The job: per site a real CJ (``ClientAPILauncherExecutor`` + ``SubprocessLauncher`` +
pipe), driven the way NVFlare's ``ClientRunner`` drives it, against the server stand-in.

Per site, one thread does what ``ClientRunner`` does: ``START_RUN`` (the executor opens
its pipe and initializes its launcher), then per task ``BEFORE_TASK_EXECUTION``,
``execute(task, fl_ctx, Signal(parent=run_abort))`` and a SubmitUpdate from the site's
CJ cell (``site-N_cj``, which ``engine.get_cell()`` returns, so the executor enables
receiver-side PASS_THROUGH on it), and at the end ``ABOUT_TO_END_RUN`` and ``END_RUN``.
The per-task Signal is never triggered after its task, as in ``client_runner.py``.

The engine is a stand-in of the kind NVFlare's own unit tests use
(``tests/unit_test/app_common/executors/client_api_launcher_executor_test.py``'s
``_FakeEngine``: components, workspace, cell); the ``FLContext`` comes from NVFlare's
``FLContextManager`` and the ``Workspace`` is NVFlare's, on a directory of the run.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_flrelia.contract.job import JobConfig
from pytest_flrelia.contract.result import Array, RoundOutcome
from pytest_flrelia.contract.timeline import EventKind
from pytest_flrelia.targets.nvflare import nv, wiring
from pytest_flrelia.targets.nvflare.observe import Observer, SiteState
from pytest_flrelia.targets.nvflare.server import Server, Submission

JOB_ID = "flrelia-job"
PIPE_ID = "pipe"
LAUNCHER_ID = "launcher"


class Engine:
    """What the executor and the launcher ask of their engine, and nothing more."""

    def __init__(self, components: dict[str, Any], workspace: Any, cell: Any) -> None:
        self.components = components
        self.workspace = workspace
        self.cell = cell

    def get_component(self, component_id: str) -> Any:
        return self.components.get(component_id)

    def get_workspace(self) -> Any:
        return self.workspace

    def get_cell(self) -> Any:
        return self.cell

    def fire_event(self, event_type: str, fl_ctx: Any) -> None:
        """Log events and the like: no other component listens in this job."""


def heartbeat_timeout(job: JobConfig) -> float:
    """The job's heartbeat timeout, raised to what NVFlare's child can meet: it sends a
    heartbeat every 5 s whatever the job says, so a shorter timeout kills live peers."""
    return max(job.timeouts.heartbeat, wiring.HEARTBEAT_MIN_TIMEOUT)


def execution_timeout(job: JobConfig) -> float:
    """The job's execution timeout, moved up by as much as :func:`heartbeat_timeout`
    raised the heartbeat timeout, when the job's own heartbeat would notice a silent
    peer first (``heartbeat < execution``).

    NVFlare's executor has no task timeout by default (``task_wait_timeout=None``) and a
    300 s heartbeat timeout: a silent peer is NVFlare's "peer gone" after the heartbeat
    timeout (``PipeHandler._try_read``: "peer gone: no heartbeat for Xs", then the
    executor's "task pipe stopped! aborting task."), never a task timeout.  Raising only
    the heartbeat would invert the job's order (30 s against, say, 20 s) and let the task
    timeout fire first; shifting both keeps the job's own margin between them."""
    t = job.timeouts
    raised = heartbeat_timeout(job) - t.heartbeat
    if raised <= 0 or t.heartbeat >= t.execution:
        return t.execution
    return t.execution + raised


def download_complete_timeout(job: JobConfig) -> float:
    """The job's gate wait, raised by one period of NVFlare's download monitor.

    The child's ``download_done.wait(download_complete_timeout)`` starts when its result
    is acknowledged; the gate opens at the monitor's next look, one 5 s period after the
    transaction began when a one-round child started the monitor with it.  A 5 s
    timeout then races that look by the ack's round trip: under load the wait ran out
    first ("download not signalled within 5.0s; proceeding"), the process exited
    without its `after_download` point, and a fault there was never delivered."""
    return job.timeouts.download_complete + wiring.DOWNLOAD_MONITOR_PERIOD


def pre_init_timeout(job: JobConfig) -> float:
    """The job's pre-init timeout, raised to what a fresh NVFlare child needs to start."""
    return max(job.timeouts.pre_init, wiring.PRE_INIT_FLOOR)


def shutdown_timeout(job: JobConfig, *, gated: bool) -> float:
    """How long the launcher's stop waits for its process to exit on its own before it
    terminates it (``SubprocessLauncher(shutdown_timeout=...)``, NVFlare's default 0).

    With one process for all rounds that stop comes once, at ``END_RUN``, after
    ``ABOUT_TO_END_RUN`` told the process the job ended (``notify_end``): it is the end
    of the job's wait for a natural exit, the job's ``deferred_stop_wait``, raised as much
    as :func:`download_complete_timeout` raised the gate when the version has one
    (``gated``): the last round's gate may still be waiting for the monitor's look, and a
    stop wait shorter than the gate terminates the process in it (its exit, and a fault
    there, never come).  With one process per round it stays 0: 2.7.1's and
    2.7.2rc13's synchronous stop must not be given a wait they do not have, and 2.7.2's
    deferred stop does its own waiting."""
    if not job.launch_once:
        return 0.0
    raised = wiring.DOWNLOAD_MONITOR_PERIOD if gated else 0.0
    return job.timeouts.deferred_stop_wait + raised


def has_download_gate(executor_cls: Any) -> bool:
    """Whether this version's executor gates the child's exit on the download (2.7.1's
    has no ``download_complete_timeout``)."""
    return "download_complete_timeout" in _supported(executor_cls, download_complete_timeout=0)


@dataclass
class Task:
    round: int
    name: str
    shareable: Any


class SiteCJ:
    """One site's client job: the real executor, launcher and pipe, and its thread."""

    def __init__(
        self, site: str, job: JobConfig, root_url: str, workdir: Path, obs: Observer,
        server: Server, run_abort: Any, pipe_kind: str,
    ) -> None:
        self.site = site
        self.job = job
        self.obs = obs
        self.server = server
        self.run_abort = run_abort
        self.tasks: queue.Queue[Task | None] = queue.Queue()
        self.error: str | None = None
        self.done: dict[int, threading.Event] = {}
        root = workdir / "sites" / site
        app_dir = root / (JOB_ID) / f"app_{site}"
        for sub in (app_dir / "config", app_dir / "custom", root / "startup", root / "local"):
            sub.mkdir(parents=True, exist_ok=True)
        workspace = nv.module("apis.workspace").Workspace(str(root), site)
        cell_mod = nv.module("fuel.f3.cellnet.cell")
        self.cell = cell_mod.Cell(
            fqcn=f"{site}_cj", root_url=root_url, secure=False, credentials={},
            create_internal_listener=False,
        )
        self.pipe = self._pipe(pipe_kind, root_url, app_dir)
        executor_cls = nv.module(
            "app_common.executors.client_api_launcher_executor"
        ).ClientAPILauncherExecutor
        self.launcher = nv.module("app_common.launchers.subprocess_launcher").SubprocessLauncher(
            script=f"{sys.executable} -u -m {wiring.CHILD_MODULE} {site}",
            launch_once=job.launch_once,
            shutdown_timeout=shutdown_timeout(job, gated=has_download_gate(executor_cls)),
        )
        self.executor = executor_cls(
            pipe_id=PIPE_ID,
            launcher_id=LAUNCHER_ID,
            task_wait_timeout=execution_timeout(job),
            external_pre_init_timeout=pre_init_timeout(job),
            heartbeat_timeout=heartbeat_timeout(job),
            train_task_name=wiring.TRAIN_TASK,
            evaluate_task_name=wiring.VALIDATE_TASK,
            **_supported(executor_cls, download_complete_timeout=download_complete_timeout(job)),
        )
        self.engine = Engine(
            {PIPE_ID: self.pipe, LAUNCHER_ID: self.launcher, "executor": self.executor},
            workspace, self.cell,
        )
        fl_context = nv.module("apis.fl_context")
        constants = nv.module("apis.fl_constant")
        self.manager = fl_context.FLContextManager(
            engine=self.engine, identity_name=site, job_id=JOB_ID,
            public_stickers={}, private_stickers={
                constants.FLContextKey.WORKSPACE_OBJECT: workspace,
                constants.FLContextKey.CURRENT_JOB_ID: JOB_ID,
                constants.ReservedKey.RUN_ABORT_SIGNAL: run_abort,
            },
        )
        self.fl_ctx = self.manager.new_context()
        obs.sites[site] = SiteState(site, executor=self.executor, launcher=self.launcher,
                                    pipe=self.pipe)
        self.thread = threading.Thread(target=self._run, name=f"flrelia-cj-{site}", daemon=True)

    def _pipe(self, kind: str, root_url: str, app_dir: Path) -> Any:
        if kind == "file":
            mode = nv.module("fuel.utils.constants").Mode
            pipe_dir = app_dir / "pipe"
            pipe_dir.mkdir(exist_ok=True)
            return nv.module("fuel.utils.pipe.file_pipe").FilePipe(
                mode=mode.PASSIVE, root_path=str(pipe_dir)
            )
        return nv.module("fuel.utils.pipe.cell_pipe").CellPipe(
            mode="PASSIVE", site_name=self.site, token=wiring.TOKEN, root_url=root_url,
            secure_mode=False, workspace_dir="",
        )

    # -- ClientRunner's part -----------------------------------------------------------

    def start(self) -> None:
        self.cell.start()
        self.thread.start()

    def _run(self) -> None:
        self.obs.enter(self.site)
        event_type = nv.module("apis.event_type").EventType
        try:
            self.executor.handle_event(event_type.START_RUN, self.fl_ctx)
        except Exception as exc:
            self.error = f"{self.site}: START_RUN failed: {type(exc).__name__}: {exc}"
        while True:
            task = self.tasks.get()
            if task is None:
                break
            try:
                if self.error is not None or self.run_abort.triggered:
                    self.server.failed(self.site, task.round, self.error or "the run was aborted")
                else:
                    self._task(task)
            except Exception as exc:  # our defect: the round fails with it, the job ends
                self.error = f"{self.site}: the CJ driver raised {type(exc).__name__}: {exc}"
                self.server.failed(self.site, task.round, self.error)
                raise
            finally:
                self.done.setdefault(task.round, threading.Event()).set()
        self._end_run(event_type)

    def _task(self, task: Task) -> None:
        state = self.obs.sites[self.site]
        state.round = task.round
        event_type = nv.module("apis.event_type").EventType
        signal = nv.module("apis.signal").Signal(parent=self.run_abort)
        reasons = _keep_reasons(signal)
        shareable_mod = nv.module("apis.shareable")
        fl_ctx = self.manager.new_context()
        try:
            self.executor.handle_event(event_type.BEFORE_TASK_EXECUTION, fl_ctx)
            reply = self.executor.execute(task.name, task.shareable, fl_ctx, signal)
            if signal.triggered:
                reply = shareable_mod.make_reply(shareable_mod.ReturnCode.TASK_ABORTED)
                why = "; ".join(dict.fromkeys(str(r) for r in reasons)) or str(signal.value)
                self.server.reason(self.site, task.round, f"the task was aborted: {why}")
        except Exception as exc:
            self.server.failed(self.site, task.round, f"{self.site}: execute raised {exc!r}")
            return
        self._submit(task, reply)

    def _submit(self, task: Task, reply: Any) -> None:
        constants = nv.module("apis.fl_constant")
        reserved = nv.module("apis.shareable").ReservedHeaderKey
        defs = nv.module("fuel.f3.cellnet.defs")
        utils = nv.module("fuel.f3.cellnet.utils")
        reply.set_header(reserved.TASK_NAME, task.name)
        reply.set_header(reserved.TASK_ID,
                         task.shareable.get_header(constants.FLContextKey.TASK_ID))
        rc = reply.get_return_code()
        message = utils.new_cell_message({}, reply)
        result = self.cell.send_request(
            target="server",
            channel=defs.CellChannel.SERVER_COMMAND,
            topic=constants.ServerCommandNames.SUBMIT_UPDATE,
            request=message,
            timeout=self.job.timeouts.submit_update,
            optional=rc == "TASK_ABORTED",
            abort_signal=self.run_abort,
        )
        code = result.get_header(defs.MessageHeaderKey.RETURN_CODE)
        if code != defs.ReturnCode.OK:
            self.server.failed(self.site, task.round,
                               f"{self.site}: SubmitUpdate failed ({code})")

    def _end_run(self, event_type: Any) -> None:
        for kind in (event_type.ABOUT_TO_END_RUN, event_type.END_RUN):
            try:
                self.executor.handle_event(kind, self.fl_ctx)
            except Exception as exc:
                if self.error is None:
                    self.error = f"{self.site}: {kind} failed: {exc!r}"

    def stop(self, timeout: float) -> None:
        self.tasks.put(None)
        self.thread.join(timeout)
        self.cell.stop()


def _keep_reasons(signal: Any) -> list[object]:
    """Every value the task's Signal is triggered with, in order: NVFlare triggers it
    again on the way out ("execution exception in TaskExchanger"), and a Signal keeps
    only the last, which hides why the task was aborted."""
    reasons: list[object] = []
    real_trigger = signal.trigger

    def trigger(value: object) -> None:
        reasons.append(value)
        real_trigger(value)

    signal.trigger = trigger
    return reasons


def _supported(cls: Any, **kwargs: Any) -> dict[str, Any]:
    """The keyword arguments this version's ``cls`` takes (2.7.1 has no download gate)."""
    import inspect  # noqa: PLC0415

    params = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in kwargs.items() if k in params}


class Job:
    """The rounds, as the server stand-in runs them."""

    def __init__(self, job: JobConfig, server: Server, sites: dict[str, SiteCJ],
                 run_abort: Any, stopping: threading.Event) -> None:
        self.job = job
        self.server = server
        self.sites = sites
        self.run_abort = run_abort
        self.stopping = stopping

    def task(self, round: int, model: dict[str, Array]) -> Task:
        name = wiring.VALIDATE_TASK if round in self.job.validate_rounds else wiring.TRAIN_TASK
        fl_model = nv.module("app_common.abstract.fl_model")
        utils = nv.module("app_common.utils.fl_model_utils").FLModelUtils
        constants = nv.module("apis.fl_constant")
        app = nv.module("app_common.app_constant").AppConstants
        shareable = utils.to_shareable(fl_model.FLModel(
            params_type=fl_model.ParamsType.FULL, params=dict(model),
            current_round=round, total_rounds=self.job.rounds,
        ))
        shareable.set_header(app.CURRENT_ROUND, round)
        shareable.set_header(app.NUM_ROUNDS, self.job.rounds)
        shareable.set_header(constants.FLContextKey.TASK_ID, str(uuid.uuid4()))
        shareable.set_header(constants.FLContextKey.TASK_NAME, name)
        return Task(round, name, shareable)

    def run(
        self, model: dict[str, Array]
    ) -> tuple[dict[str, Array], list[RoundOutcome], str | None]:
        rounds: list[RoundOutcome] = []
        error: str | None = None
        t = self.job.timeouts
        cap = t.pre_init + t.execution + t.submit_update + t.download_complete + 60.0
        for round in range(1, self.job.rounds + 1):
            if self.stopping.is_set():
                error = error or f"round {round}: the run was stopped"
                break
            started = time.monotonic()
            task = self.task(round, model)
            outcome = RoundOutcome(round, task.name)
            rounds.append(outcome)
            self.server.round = round
            self.server.timeline.record(EventKind.ROUND_START, round=round, task_kind=task.name)
            for cj in self.sites.values():
                cj.tasks.put(Task(round, task.name, _copy(task.shareable)))
            submissions = self.server.wait_round(round, cap, self.stopping)
            failed = [s for s in submissions.values() if not s.ok]
            if failed:
                outcome.error = error = f"round {round}: " + "; ".join(
                    str(s.error) for s in failed
                )
            elif task.name == wiring.TRAIN_TASK:
                model = self.server.aggregate(round, model, _in_order(submissions), outcome)
            outcome.ok = error is None
            outcome.seconds = time.monotonic() - started
            self.server.timeline.record(
                EventKind.ROUND_END, round=round, ok=outcome.ok, error=outcome.error
            )
            if error is not None:
                break
            self._wait_sites(round, cap)
        return model, rounds, error

    def _wait_sites(self, round: int, timeout: float) -> None:
        """The next round starts once every site's thread is back from this one, as the
        next task reaches a ``ClientRunner`` only after it submitted."""
        deadline = time.monotonic() + timeout
        for cj in self.sites.values():
            event = cj.done.setdefault(round, threading.Event())
            while not event.wait(0.1):
                if self.stopping.is_set() or time.monotonic() > deadline:
                    return


def _in_order(submissions: dict[str, Submission]) -> dict[str, Submission]:
    return dict(submissions)


def _copy(shareable: Any) -> Any:
    import copy  # noqa: PLC0415

    return copy.deepcopy(shareable)


__all__ = [
    "JOB_ID",
    "Engine",
    "Job",
    "SiteCJ",
    "Task",
    "download_complete_timeout",
    "execution_timeout",
    "has_download_gate",
    "heartbeat_timeout",
    "pre_init_timeout",
    "shutdown_timeout",
]
