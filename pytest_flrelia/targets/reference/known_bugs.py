"""The known-bug zoo: every historic bug of SPEC §3 as a small override of the
one correct part of :mod:`reference_impl` it lived in.

Each variant is a subclass that overrides one step and reuses the correct
others; its docstring names the step and what a user saw.  The correct classes
carry no switch for any of them.  The registry (slug, KB number, the summary,
which class replaces which :class:`~reference_impl.job.Runtime` part) is
:mod:`pytest_flrelia.targets.reference.variants`, the only one.  Agent variants
run inside the training subprocess; this module must not import pytest.
"""

from __future__ import annotations

import signal
import subprocess
import threading

from pytest_flrelia.contract import seams
from pytest_flrelia.contract.processes import group_members, wait_gone
from pytest_flrelia.contract.timeline import EventKind
from reference_impl.agent import Agent
from reference_impl.download import TensorRef
from reference_impl.executor import ClientAPILauncherExecutor, LauncherExecutor
from reference_impl.messages import Result, Task
from reference_impl.pipe_handler import PipeHandler
from reference_impl.process_stop import SignalCallback, StopStrategy
from reference_impl.task_exchanger import TaskExchanger
from reference_impl.wire import Message

# -- KB1 ------------------------------------------------------------------------


class SyncStopExecutor(ClientAPILauncherExecutor):
    """KB1 (``sync-stop``): ``_finalize_round`` is the base executor's synchronous stop.

    Users saw the server's download fail ("failed to download from site-X")
    after hours of retries: the process holding the tensors was already dead.
    """

    def _finalize_round(self, task: Task) -> None:
        LauncherExecutor._finalize_round(self, task)


# -- KB2 ------------------------------------------------------------------------


class LaunchOnceExitsAgent(Agent):
    """KB2 (``launch-once-exits``): ``_finish_round`` exits whatever the launch mode.

    Users saw round 2 never answered.
    """

    def _finish_round(self) -> None:
        self.exit(0)


# -- KB3 ------------------------------------------------------------------------


class NoRoundBoundaryExecutor(ClientAPILauncherExecutor):
    """KB3 (``deferred-stop-race``): ``_await_round_boundary`` does not wait.

    Users saw "external process has not called init and run status becomes
    success": the launcher still held the old, exited process.
    """

    def _await_round_boundary(self) -> None:
        return


# -- KB4 ------------------------------------------------------------------------


class UnboundStatusExchanger(TaskExchanger):
    """KB4 (``stale-peer-gone``): ``_on_status`` stops the current handler, whichever reported.

    Users saw a late PEER_GONE from round N stop round N+1's handler and abort the round.
    """

    def _on_status(self, handler: PipeHandler, message: Message) -> None:
        current = self.handler
        if current is not None:
            current.stop(close_pipe=False)


# -- KB5 ------------------------------------------------------------------------


class FastPathSkipsExitAgent(Agent):
    """KB5 (``fast-path-skips-exit``): ``send`` returns after ``_send_result`` when
    there is nothing to publish, before ``_finish_round``.

    Users saw per-round processes linger until the deferred-stop timeout killed them.
    """

    def send(self, result: Result) -> None:
        if not result.tensors:
            self._send_result(result, [])
            return
        super().send(result)


# -- KB6 ------------------------------------------------------------------------


class ReusedHandlerExchanger(TaskExchanger):
    """KB6 (``stopped-handler-reused``): ``handler_for_round`` keeps the existing handler.

    Users saw the next round fail at once: the pipe handler was stopped, the
    peer did not accept the task.
    """

    def handler_for_round(self, round: int) -> PipeHandler:
        with self._lock:
            if self.handler is None:
                return super().handler_for_round(round)
            return self.handler


# -- KB7 ------------------------------------------------------------------------


class HeartbeatErrorEscapesHandler(PipeHandler):
    """KB7 (``heartbeat-broken-pipe``): ``_on_heartbeat_error`` re-raises.

    Users saw the heartbeat thread die silently; peer-gone was never reported
    and the round waited for its full timeout.
    """

    def _on_heartbeat_error(self, error: BaseException) -> None:
        raise error


class HeartbeatErrorEscapesExchanger(TaskExchanger):
    """Builds :class:`HeartbeatErrorEscapesHandler` handlers (KB7)."""

    handler_class = HeartbeatErrorEscapesHandler


# -- KB8 ------------------------------------------------------------------------


class EventNotSetInFinallyExecutor(ClientAPILauncherExecutor):
    """KB8 (``deferred-event-not-set``): ``_deferred_stop`` runs the correct steps
    without the ``finally``: a raising stop leaves the round boundary closed.

    Users saw every later round block for the full wait limit once a stop raised.
    """

    def _deferred_stop(self, round: int) -> None:
        stop = self._deferred[round]
        self._stop_when_exited(round, stop)  # when it raises, the boundary stays closed
        self._open_round_boundary(round, stop)


# -- KB9 ------------------------------------------------------------------------


class ValidateWaitsAgent(Agent):
    """KB9 (``validate-waits``): ``_gate`` waits its full timeout when nothing was
    published (an event no download can set; the correct gate has no such step).

    Users saw every validate round cost the full download timeout.
    """

    def _gate(self, refs: list[TensorRef]) -> None:
        if refs:
            super()._gate(refs)
            return
        self._timeline.record(EventKind.GATE_WAIT, site=self.site, round=self._round)
        threading.Event().wait(self.settings.download_complete_timeout)
        self._timeline.record(EventKind.GATE_TIMEOUT, site=self.site, round=self._round)


# -- KB10 -----------------------------------------------------------------------


class HandlerReplacingExchanger(TaskExchanger):
    """KB10 (``handler-replaced-mid-execute``): ``on_aux_event`` replaces the handler
    inside the busy window.

    Users saw the result land on the orphaned handler while ``execute()`` read
    the other: a silent deadlock.
    """

    def on_aux_event(self, name: str) -> None:
        with self._lock:
            round = self._busy_round
        if round is not None:
            self.handler_for_round(round)


# -- KB11 -----------------------------------------------------------------------


class StaleMessageExchanger(TaskExchanger):
    """KB11 (``stale-pipe-message``): ``_clear_pipe`` does nothing.

    Users saw a PEER_GONE/END left unread at the round boundary stop the new
    round's handler.
    """

    def _clear_pipe(self, round: int) -> None:
        return


# -- KB12 -----------------------------------------------------------------------


class ChildOnlyStopStrategy(StopStrategy):
    """KB12 (``child-only-sigterm``): SIGTERM to the direct child only, no
    escalation, then wait until nothing holds its output.

    Users saw ``stop_task()`` block forever on a script that ignores SIGTERM or
    whose data-loader child holds stdout, and grandchildren orphaned.
    """

    def __init__(self, grace: float) -> None:
        del grace  # the bug: there is no grace period, only waiting

    def stop(self, process: subprocess.Popen[bytes], on_signal: SignalCallback) -> int:
        if process.poll() is None:
            seams.kill(process.pid, signal.SIGTERM)
            on_signal(signal.SIGTERM, "pid")
        returncode = process.wait()
        while group_members(process.pid):  # "wait for the output to close"
            wait_gone(group_members(process.pid), 1.0)
        return returncode


