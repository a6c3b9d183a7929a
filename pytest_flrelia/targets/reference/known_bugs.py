"""The known-bug zoo: every historic bug of SPEC §3 as a small override of the
one correct part of :mod:`reference_impl` it lived in.

Each variant is a subclass that overrides one method; its docstring says the
bug in one sentence and what a user saw.  The correct classes carry no switch
for any of them.  :data:`KNOWN_BUGS` maps a slug to the :class:`Runtime` parts
it replaces.  Agent variants run inside the training subprocess, so they are
named by import path; this module must not import pytest.
"""

from __future__ import annotations

import signal
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from pytest_flrelia.contract import seams
from pytest_flrelia.contract.timeline import EventKind
from reference_impl.agent import Agent
from reference_impl.download import TensorRef
from reference_impl.executor import ClientAPILauncherExecutor, LauncherExecutor, RoundState
from reference_impl.job import Runtime
from reference_impl.messages import Result, Task
from reference_impl.pipe_handler import PipeHandler
from reference_impl.process_stop import SignalCallback, StopStrategy, group_members, wait_gone
from reference_impl.task_exchanger import TaskExchanger
from reference_impl.wire import Message

# -- KB1 ------------------------------------------------------------------------


class SyncStopExecutor(ClientAPILauncherExecutor):
    """KB1 sync-stop: stops the subprocess the moment ``execute()`` has its result.

    Users saw the server's download fail ("failed to download from site-X")
    after hours of retries: the process holding the tensors was already dead.
    """

    def _finalize_round(self, task: Task) -> None:
        LauncherExecutor._finalize_round(self, task)


# -- KB2 ------------------------------------------------------------------------


class LaunchOnceExitsAgent(Agent):
    """KB2 launch-once-exits: the agent exits after the gate even when one
    process serves every round.  Users saw round 2 never answered."""

    def _finish_round(self) -> None:
        self.exit(0)


# -- KB3 ------------------------------------------------------------------------


class NoRoundBoundaryExecutor(ClientAPILauncherExecutor):
    """KB3 deferred-stop-race: the next launch does not wait for the previous
    round's deferred stop.  Users saw "external process has not called init and
    run status becomes success": the launcher still held the old, exited process."""

    def _await_round_boundary(self) -> None:
        return


# -- KB4 ------------------------------------------------------------------------


class UnboundStatusExchanger(TaskExchanger):
    """KB4 stale-peer-gone: the status callback acts on whatever handler is
    current, not the one that reported.  Users saw a late PEER_GONE from round N
    stop round N+1's handler and abort the round."""

    def _on_status(self, handler: PipeHandler, message: Message) -> None:
        current = self.handler
        if current is not None:
            current.stop(close_pipe=False)


# -- KB5 ------------------------------------------------------------------------


class FastPathSkipsExitAgent(Agent):
    """KB5 fast-path-skips-exit: with nothing to download, ``send()`` returns
    before the exit logic.  Users saw per-round processes linger until the
    deferred-stop timeout killed them."""

    def send(self, result: Result) -> None:
        if not result.tensors:
            self._send_result(result, [])
            return
        super().send(result)


# -- KB6 ------------------------------------------------------------------------


class ReusedHandlerExchanger(TaskExchanger):
    """KB6 stopped-handler-reused: the handler of the previous round is used
    again even after a status event stopped it.  Users saw the next round fail
    at once: the pipe handler was stopped, the peer did not accept the task."""

    def handler_for_round(self, round: int) -> PipeHandler:
        with self._lock:
            if self.handler is None:
                return super().handler_for_round(round)
            return self.handler


# -- KB7 ------------------------------------------------------------------------


class HeartbeatErrorEscapesHandler(PipeHandler):
    """KB7 heartbeat-broken-pipe: a heartbeat send error escapes its thread.
    Users saw the heartbeat thread die silently; peer-gone was never reported and
    the round waited for its full timeout."""

    def _on_heartbeat_error(self, error: BaseException) -> None:
        raise error


class HeartbeatErrorEscapesExchanger(TaskExchanger):
    """Builds :class:`HeartbeatErrorEscapesHandler` handlers (KB7)."""

    handler_class = HeartbeatErrorEscapesHandler


# -- KB8 ------------------------------------------------------------------------


class EventNotSetInFinallyExecutor(ClientAPILauncherExecutor):
    """KB8 deferred-event-not-set: the round-boundary event is set after
    ``stop_task()``, not in a ``finally``.  Users saw every later round block
    for the full wait limit once a stop raised."""

    def _deferred_stop(self, round: int) -> None:
        self._wait_for_exit(self.stop_wait)
        self._stop_after_wait(round)
        self.timeline.record(EventKind.DEFERRED_STOP_DONE, site=self.site, round=round)
        self._enter(RoundState.DONE)
        self._round_boundary.set()


# -- KB9 ------------------------------------------------------------------------


class ValidateWaitsAgent(Agent):
    """KB9 validate-waits: the gate waits for a download although nothing was
    published.  Users saw every validate round cost the full download timeout."""

    def _gate(self, refs: list[TensorRef]) -> None:
        if refs:
            super()._gate(refs)
            return
        self._timeline.record(EventKind.GATE_WAIT, site=self.site, round=self._round)
        threading.Event().wait(self.settings.download_complete_timeout)
        self._timeline.record(EventKind.GATE_TIMEOUT, site=self.site, round=self._round)


# -- KB10 -----------------------------------------------------------------------


class HandlerReplacingExchanger(TaskExchanger):
    """KB10 handler-replaced-mid-execute: an auxiliary event replaces the pipe
    handler while ``execute()`` waits for the result.  Users saw the result land
    on the orphaned handler while ``execute()`` read the other: a silent deadlock."""

    def on_aux_event(self, name: str) -> None:
        with self._lock:
            round = self._busy_round
        if round is not None:
            self.handler_for_round(round)


# -- KB11 -----------------------------------------------------------------------


class StaleMessageExchanger(TaskExchanger):
    """KB11 stale-pipe-message: the pipe is not cleared when a new handler is
    created.  Users saw a PEER_GONE/END left unread at the round boundary stop
    the new round's handler."""

    def _clear_pipe(self, round: int) -> None:
        return


# -- KB12 -----------------------------------------------------------------------


class ChildOnlyStopStrategy(StopStrategy):
    """KB12 child-only-sigterm: SIGTERM to the direct child only, no escalation,
    then wait until nothing holds its output.  Users saw ``stop_task()`` block
    forever on a script that ignores SIGTERM or whose data-loader child holds
    stdout, and grandchildren orphaned."""

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


# -- the zoo --------------------------------------------------------------------


@dataclass(frozen=True)
class KnownBug:
    slug: str
    kb: str
    summary: str
    runtime: Runtime


def _agent(cls: type[Agent]) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


_CORRECT = Runtime()

KNOWN_BUGS: Mapping[str, KnownBug] = MappingProxyType(
    {
        bug.slug: bug
        for bug in (
            KnownBug(
                "sync-stop",
                "KB1",
                SyncStopExecutor.__doc__ or "",
                _CORRECT.with_parts(executor_class=SyncStopExecutor),
            ),
            KnownBug(
                "launch-once-exits",
                "KB2",
                LaunchOnceExitsAgent.__doc__ or "",
                _CORRECT.with_parts(agent_class=_agent(LaunchOnceExitsAgent)),
            ),
            KnownBug(
                "deferred-stop-race",
                "KB3",
                NoRoundBoundaryExecutor.__doc__ or "",
                _CORRECT.with_parts(executor_class=NoRoundBoundaryExecutor),
            ),
            KnownBug(
                "stale-peer-gone",
                "KB4",
                UnboundStatusExchanger.__doc__ or "",
                _CORRECT.with_parts(exchanger_class=UnboundStatusExchanger),
            ),
            KnownBug(
                "fast-path-skips-exit",
                "KB5",
                FastPathSkipsExitAgent.__doc__ or "",
                _CORRECT.with_parts(agent_class=_agent(FastPathSkipsExitAgent)),
            ),
            KnownBug(
                "stopped-handler-reused",
                "KB6",
                ReusedHandlerExchanger.__doc__ or "",
                _CORRECT.with_parts(exchanger_class=ReusedHandlerExchanger),
            ),
            KnownBug(
                "heartbeat-broken-pipe",
                "KB7",
                HeartbeatErrorEscapesHandler.__doc__ or "",
                _CORRECT.with_parts(exchanger_class=HeartbeatErrorEscapesExchanger),
            ),
            KnownBug(
                "deferred-event-not-set",
                "KB8",
                EventNotSetInFinallyExecutor.__doc__ or "",
                _CORRECT.with_parts(executor_class=EventNotSetInFinallyExecutor),
            ),
            KnownBug(
                "validate-waits",
                "KB9",
                ValidateWaitsAgent.__doc__ or "",
                _CORRECT.with_parts(agent_class=_agent(ValidateWaitsAgent)),
            ),
            KnownBug(
                "handler-replaced-mid-execute",
                "KB10",
                HandlerReplacingExchanger.__doc__ or "",
                _CORRECT.with_parts(exchanger_class=HandlerReplacingExchanger),
            ),
            KnownBug(
                "stale-pipe-message",
                "KB11",
                StaleMessageExchanger.__doc__ or "",
                _CORRECT.with_parts(exchanger_class=StaleMessageExchanger),
            ),
            KnownBug(
                "child-only-sigterm",
                "KB12",
                ChildOnlyStopStrategy.__doc__ or "",
                _CORRECT.with_parts(stop_strategy=ChildOnlyStopStrategy),
            ),
        )
    }
)
"""Slug -> the variant runtime, in SPEC §3 order."""


def runtime_for(slug: str | None) -> Runtime:
    """The correct runtime, or the known-bug variant named by ``slug``."""
    return _CORRECT if slug is None else KNOWN_BUGS[slug].runtime
