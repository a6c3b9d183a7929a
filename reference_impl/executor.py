"""Executors: run one round of a task in the training subprocess.

:class:`LauncherExecutor` stops the subprocess synchronously at the end of a
round.  :class:`ClientAPILauncherExecutor` defers the stop (SPEC §2): the
subprocess must stay alive until the server has pulled its tensors, so a
background thread waits for it to exit on its own, then cleans up; the next
round first waits for that thread (the round boundary).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pytest_flrelia.contract.failpoints import failpoint
from pytest_flrelia.contract.job import Timeouts
from pytest_flrelia.contract.timeline import EventKind, Timeline
from reference_impl.agent import LAUNCH_ROUND_ENV
from reference_impl.launcher import Launcher, RunStatus
from reference_impl.messages import Task
from reference_impl.pipe_handler import HandlerState, PipeHandler
from reference_impl.task_exchanger import TaskExchanger
from reference_impl.wire import Message, Topic

log = logging.getLogger(__name__)

WAIT_SLICE = 0.05
"""How long one wait for a pipe message lasts before the executor re-checks the process."""
ROUND_BOUNDARY_MARGIN = 1.0
"""How much longer than the deferred stop can take the next round waits for it."""
PEER_CLOSE_WAIT = 2.0
"""Per-round mode: how long the next round waits for the previous process's connection to
finish delivering (its goodbye must land before the pipe is cleared, not after)."""
EXIT_AFTER_BROKEN_PIPE = 0.5
"""How long after its pipe broke a dying process may take to be seen ended."""
RESULT_DRAIN = 5.0
"""The most a result sent just before the process ended may take to be read (normally the
pipe drains in milliseconds, see ``_pipe_drained``)."""


class ExecutionError(RuntimeError):
    """A round could not produce a result; the message says what happened and where."""


class ExecutionAborted(ExecutionError):
    """The job was aborted while the round was running."""


@dataclass(frozen=True)
class RoundResult:
    """What ``execute()`` returns: the payload of the subprocess's RESULT message."""

    site: str
    round: int
    weight: float
    refs: tuple[Mapping[str, Any], ...]
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class _DeferredStop:
    """One round's deferred stop: the process it is for and the boundary it opens."""

    pid: int | None
    boundary: threading.Event


class LauncherExecutor:
    """Launches the training script per task and stops it when the round ends."""

    def __init__(
        self,
        *,
        site: str,
        launcher: Launcher,
        exchanger: TaskExchanger,
        timeouts: Timeouts,
        timeline: Timeline,
        launch_env: Mapping[str, str],
        abort: threading.Event | None = None,
    ) -> None:
        self.site = site
        self.launcher = launcher
        self.exchanger = exchanger
        self.timeouts = timeouts
        self.timeline = timeline
        self._launch_env = dict(launch_env)
        self.abort = abort or threading.Event()
        self._round: int | None = None
        self._round_boundary = threading.Event()
        self._round_boundary.set()
        self._deferred_thread: threading.Thread | None = None
        self._deferred: dict[int, _DeferredStop] = {}
        """The deferred stops still running, by round (the client-API executor's)."""
        self._stop_lock = threading.Lock()
        """Held across "is it still my process?" and its stop, so a late deferred stop
        never stops the process the round boundary launched after forcing its stop."""

    @property
    def stop_wait(self) -> float:
        """How long a stop waits for a natural exit: ``timeouts.stop_wait`` when set,
        else the download gate's timeout, so a process in its gate is never stopped
        before the gate could have opened (NVFlare's client-API executor does the same)."""
        return self.timeouts.deferred_stop_wait

    @property
    def launch_env(self) -> Mapping[str, str]:
        """The environment every launch of the training script gets."""
        return self._launch_env

    # -- one round ---------------------------------------------------------

    def execute(self, task: Task) -> RoundResult:
        """Run ``task`` in the training subprocess and return its result."""
        self._round = task.round
        # From the first step to the last, the handler must not change (the busy window).
        with self.exchanger.executing(task.round):
            self._await_round_boundary()
            self._check_abort()  # an aborted job launches nothing more
            handler = self._launch(task)
            self._send_task(handler, task)
            result = self._read_result(handler, task)
            self._finalize_round(task)
        return result

    def finalize(self) -> None:
        """End of job: let the last round's stop finish, end the subprocess, release all."""
        self._await_round_boundary()
        if self.launcher.launch_once and self.exchanger.handler is not None:
            self.exchanger.handler.send(Message(Topic.END, {"site": self.site}))
            self._wait_for_exit(self.stop_wait)
        self.launcher.stop_task()
        self.exchanger.close()

    # -- the steps ---------------------------------------------------------

    def _await_round_boundary(self) -> None:
        """Wait until the previous round's deferred stop finished; force it on timeout."""
        if not self._round_boundary.is_set():
            self.timeline.record(
                EventKind.ROUND_BOUNDARY_WAIT,
                site=self.site,
                round=self._round,
                timeout=self.stop_wait,
            )
        # The deferred stop may use its whole wait and then a stop's grace: wait a little longer
        # than that, so a stuck process is stopped once, by the deferred thread.
        limit = self.stop_wait + self.timeouts.stop_grace + ROUND_BOUNDARY_MARGIN
        if not self._wait_or_abort(self._round_boundary, limit):
            if self.abort.is_set():
                log.info("%s: job aborted during the previous round's deferred stop", self.site)
            else:
                log.warning(
                    "%s: the previous round's deferred stop did not finish within %ss; "
                    "forcing it",
                    self.site,
                    limit,
                )
            with self._stop_lock:
                self.launcher.stop_task()
        if (
            self.launcher.needs_deferred_stop()
            and self.launcher.check_run_status() is not RunStatus.NOT_STARTED
        ):
            with self._stop_lock:
                self.launcher.stop_task()

    def _launch(self, task: Task) -> PipeHandler:
        failpoint("executor.before_launch", site=self.site, round=task.round)
        if self.launcher.needs_deferred_stop() and not self.exchanger.pipe.wait_for_no_peer(
            PEER_CLOSE_WAIT
        ):
            log.warning("%s: the previous process's connection is still open", self.site)
        handler = self.exchanger.handler_for_round(task.round)
        launched = self.launcher.launch_task(
            f"{task.kind}-round-{task.round}",
            {**self._launch_env, LAUNCH_ROUND_ENV: str(task.round)},
        )
        if launched or self.launcher.needs_deferred_stop():
                self._await_init(handler)
        return handler

    def _await_init(self, handler: PipeHandler) -> None:
        deadline = time.monotonic() + self.timeouts.pre_init
        while True:
            self._check_abort()
            message = handler.get_next(WAIT_SLICE)
            if message is not None and message.topic == Topic.HELLO:
                self.timeline.record(
                    EventKind.INIT_SEEN,
                    site=self.site,
                    round=self._round,
                    pid=message.payload.get("pid"),
                )
                return
            status = self.launcher.check_run_status()
            if status in (RunStatus.SUCCESS, RunStatus.FAILED):
                raise ExecutionError(
                    f"{self.site}: external process has not called init and run status "
                    f"becomes {status.value}"
                )
            if handler.state is HandlerState.STOPPED:
                raise ExecutionError(f"{self.site}: pipe handler stopped before init")
            if time.monotonic() > deadline:
                raise ExecutionError(
                    f"{self.site}: external process did not call init within "
                    f"{self.timeouts.pre_init}s"
                )

    def _send_task(self, handler: PipeHandler, task: Task) -> None:
        failpoint("executor.before_task_sent", site=self.site, round=task.round)
        if not handler.send(task.to_message()):
            raise ExecutionError(
                f"{self.site}: could not send the task of round {task.round}: pipe handler "
                f"is {handler.state.value}"
            )
        self.timeline.record(
            EventKind.TASK_SENT, site=self.site, round=task.round, task_kind=task.kind
        )

    def _read_result(self, handler: PipeHandler, task: Task) -> RoundResult:
        deadline = time.monotonic() + self.timeouts.execution
        exited_at: float | None = None
        stopped_at: float | None = None
        while True:
            self._check_abort()
            message = handler.get_next(WAIT_SLICE) or handler.take_leftover()
            if message is not None and message.topic == Topic.RESULT:
                if message.payload.get("site") != self.site:
                    log.warning(
                        "%s: rejecting a result that claims to be from %r",
                        self.site,
                        message.payload.get("site"),
                    )
                elif message.payload.get("round") == task.round:
                    return self._accept_result(message)
                else:
                    log.warning(
                        "%s: dropping a result for round %s",
                        self.site,
                        message.payload.get("round"),
                    )
            now = time.monotonic()
            status = self.launcher.check_run_status()
            if status in (RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.NOT_STARTED):
                # What the process sent before it ended is still on its way: give up only
                # once its connection is closed and everything it sent has been read.
                exited_at = exited_at or now
                if (message is None and self._pipe_drained(handler)) or (
                    now - exited_at > RESULT_DRAIN
                ):
                    raise ExecutionError(
                        f"{self.site}: training process ended ({status.value}) before it sent "
                        f"the result of round {task.round}"
                    )
            elif handler.state is HandlerState.STOPPED:
                # A dying process breaks its pipe a moment before it can be reaped: prefer
                # the process's own story when it ends within the drain window.
                stopped_at = stopped_at or now
                if now - stopped_at > EXIT_AFTER_BROKEN_PIPE:
                    raise ExecutionError(
                        f"{self.site}: pipe handler stopped while waiting for the result of "
                        f"round {task.round} (peer gone or END)"
                    )
            if now > deadline:
                raise ExecutionError(
                    f"{self.site}: no result for round {task.round} within "
                    f"{self.timeouts.execution}s"
                )

    def _pipe_drained(self, handler: PipeHandler) -> bool:
        """No connection is open any more and nothing received is left unread.

        The pipe is asked first: once it has no peer and an empty inbox, every
        message is in the handler's queue (:meth:`Pipe.deliver` hands them over
        atomically), and only this thread takes from that queue.  Messages a
        stopped handler left in the pipe count as unread (``take_leftover``).
        """
        pipe = self.exchanger.pipe
        return not pipe.peer_connected and pipe.pending == 0 and handler.pending == 0

    def _accept_result(self, message: Message) -> RoundResult:
        p = message.payload
        result = RoundResult(
            site=self.site,
            round=int(p["round"]),
            weight=float(p.get("weight", 1.0)),
            refs=tuple(p.get("refs", [])),
            metrics=dict(p.get("metrics", {})),
        )
        self.timeline.record(
            EventKind.RESULT_RECEIVED, site=self.site, round=result.round, tensors=len(result.refs)
        )
        failpoint("executor.after_result", site=self.site, round=result.round)
        return result

    def _finalize_round(self, task: Task) -> None:
        """Stop a per-round subprocess now.  (The base executor has no deferred stop.)"""
        if self.launcher.needs_deferred_stop():
            self.launcher.stop_task()

    # -- helpers -----------------------------------------------------------

    def _wait_for_exit(self, timeout: float, pid: int | None = None) -> bool:
        """True once the process exited by itself; False at ``timeout`` or on abort.

        Waits on the process, so the exit is seen the moment it happens; the
        abort and the status are checked every ``stop_poll``.  With ``pid``, only
        that process counts: False once the launcher no longer holds it (the
        round boundary forced its stop and may have launched the next one).
        """
        deadline = time.monotonic() + timeout
        while True:
            if pid is not None and self.launcher.pid != pid:
                return False
            if self.launcher.check_run_status() is not RunStatus.RUNNING:
                return True
            remaining = deadline - time.monotonic()
            if self.abort.is_set() or remaining <= 0:
                return False
            self.launcher.wait_for_exit(min(self.timeouts.stop_poll, remaining))

    def _wait_or_abort(self, event: threading.Event, timeout: float) -> bool:
        """Wait for ``event`` up to ``timeout``; an abort ends the wait early (False)."""
        deadline = time.monotonic() + timeout
        while not event.wait(min(WAIT_SLICE * 2, max(0.0, deadline - time.monotonic()))):
            if self.abort.is_set() or time.monotonic() >= deadline:
                return False
        return True

    def _check_abort(self) -> None:
        if self.abort.is_set():
            raise ExecutionAborted(f"{self.site}: job aborted")


class ClientAPILauncherExecutor(LauncherExecutor):
    """Defers the stop until the subprocess exits on its own after its download gate.

    Each deferred stop acts on its own round's process and opens its own boundary:
    one that outlasts its bound (the next round forced the stop and went on) may
    wake later, and must then touch neither the next round's process nor its boundary.
    """

    def _finalize_round(self, task: Task) -> None:
        if not self.launcher.needs_deferred_stop():
                return
        stop = _DeferredStop(self.launcher.pid, threading.Event())
        self._deferred[task.round] = stop
        self._round_boundary = stop.boundary
        self.timeline.record(
            EventKind.DEFERRED_STOP_START,
            site=self.site,
            round=task.round,
            wait=self.stop_wait,
        )
        self._deferred_thread = threading.Thread(
            target=self._deferred_stop,
            args=(task.round,),
            name=f"deferred-stop-{self.site}-round-{task.round}",
            daemon=True,
        )
        self._deferred_thread.start()

    def _deferred_stop(self, round: int) -> None:
        """The deferred-stop thread: stop the process once it exited (or its wait is
        over), and open the round boundary in a ``finally``, whatever the stop did."""
        stop = self._deferred[round]
        try:
            self._stop_when_exited(round, stop)
        except Exception:
            log.exception("%s: deferred stop of round %s failed", self.site, round)
        finally:
            self._open_round_boundary(round, stop)

    def _stop_when_exited(self, round: int, stop: _DeferredStop) -> None:
        """Wait for the natural exit (or the wait limit, or abort), then stop."""
        if self._wait_for_exit(self.stop_wait, pid=stop.pid):
            self.timeline.record(EventKind.EXIT_SEEN, site=self.site, round=round, pid=stop.pid)
        failpoint("executor.deferred_stop.after_wait", site=self.site, round=round)
        self._stop_after_wait(round)

    def _open_round_boundary(self, round: int, stop: _DeferredStop) -> None:
        """Round ``round``'s deferred stop is over: the next round may launch."""
        self.timeline.record(EventKind.DEFERRED_STOP_DONE, site=self.site, round=round)
        del self._deferred[round]
        stop.boundary.set()

    def _stop_after_wait(self, round: int) -> None:
        stop = self._deferred.get(round)
        with self._stop_lock:
            if stop is not None and self.launcher.pid != stop.pid:
                log.info(
                    "%s: round %s's process was stopped already (the round boundary forced "
                    "it); nothing to stop",
                    self.site,
                    round,
                )
                return
            if self.launcher.check_run_status() is RunStatus.RUNNING:
                log.warning(
                    "%s: round %s process did not exit by itself; stopping it", self.site, round
                )
            failpoint("executor.deferred_stop.before_stop", site=self.site, round=round)
            self.launcher.stop_task()
