"""Planted bugs: plausible launcher defects that no shipped scenario catches.

Each is a small override of one correct part of :mod:`reference_impl` (a subclass
that replaces one step and reuses the others), in the spirit of the known-bug zoo
(:mod:`pytest_flrelia.targets.reference.known_bugs`) but kept in the test suite: they
exist to prove that exploration finds what no hand-written scenario looks for.  Every
part here runs in the client process (none is loaded in a training subprocess).
The registry (slug -> summary, parts, the smallest schedule that shows it) is
:mod:`planted.registry`.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Sequence
from typing import Any

from pytest_flrelia.contract.timeline import EventKind
from reference_impl.agent import SITE_ENV
from reference_impl.executor import (
    WAIT_SLICE,
    ClientAPILauncherExecutor,
    ExecutionError,
    RoundResult,
)
from reference_impl.launcher import SubprocessLauncher
from reference_impl.messages import Task
from reference_impl.pipe_handler import HandlerState, PipeHandler
from reference_impl.process_stop import GroupStopStrategy, SignalCallback
from reference_impl.task_exchanger import TaskExchanger
from reference_impl.wire import Message, Topic

# -- escalates-once ---------------------------------------------------------------


class EscalatesOnceStopStrategy(GroupStopStrategy):
    """``escalates-once``: only a launcher's first stop that needs SIGKILL sends it.

    A flag meant to keep a second SIGKILL from a group already killed is set at the
    first escalation and never reset; later stops of a process that ignores SIGTERM
    send SIGTERM again and wait for it for ever.  One escalation per job (what every
    shipped scenario needs) works.
    """

    def __init__(self, grace: float) -> None:
        super().__init__(grace)
        self._escalated = False

    def stop(self, process: subprocess.Popen[bytes], on_signal: SignalCallback) -> int:
        running = process.poll() is None
        if running and self._escalated:
            self._signal_group(process.pid, signal.SIGTERM, on_signal)
            return process.wait()  # the bug: no grace, no SIGKILL this time

        def noting(sig: int, target: str) -> None:
            if running and sig == signal.SIGKILL:
                self._escalated = True
            on_signal(sig, target)

        return super().stop(process, noting)


# -- aux-before-task --------------------------------------------------------------


class LateBusyWindowExecutor(ClientAPILauncherExecutor):
    """``aux-before-task`` (with :class:`AuxReplacesExchanger`): the busy window covers
    only the task and the wait for its result, not the launch and the wait for init."""

    def execute(self, task: Task) -> RoundResult:
        self._round = task.round
        self._await_round_boundary()
        self._check_abort()
        handler = self._launch(task)
        with self.exchanger.executing(task.round):
            self._send_task(handler, task)
            result = self._read_result(handler, task)
        self._finalize_round(task)
        return result


class AuxReplacesExchanger(TaskExchanger):
    """An auxiliary event outside the busy window replaces the pipe handler at once.

    With the window of :class:`LateBusyWindowExecutor`, an aux event that lands
    after init and before the task is sent retires the handler ``execute()`` holds:
    the task cannot be sent ("pipe handler is stopped").  An aux event during the
    wait for the result (the shipped scenario) is deferred as it must be.
    """

    def on_aux_event(self, name: str) -> None:
        with self._lock:
            busy, handler = self._busy_round is not None, self.handler
        if busy or handler is None or handler.round is None:
            super().on_aux_event(name)
            return
        self.handler_for_round(handler.round)


# -- keeps-late-peer-gone ---------------------------------------------------------


class KeepsPeerGoneExchanger(TaskExchanger):
    """``keeps-late-peer-gone``: the round boundary drops a late END but keeps a late
    PEER_GONE (taken for news about the next process), which stops the new handler."""

    def _clear_pipe(self, round: int) -> None:
        kept: list[Message] = []
        dropped = 0
        while (message := self.pipe.receive(0)) is not None:
            if message.topic == Topic.PEER_GONE:
                kept.append(message)
            else:
                dropped += 1
        _put_back(self, kept)
        self._timeline.record(EventKind.PIPE_CLEARED, site=self.site, round=round,
                              dropped=dropped)


def _put_back(exchanger: TaskExchanger, messages: list[Message]) -> None:
    """Return ``messages`` to the front of the pipe's inbox (the pipe has no API for it)."""
    pipe = exchanger.pipe
    with pipe._cond:
        pipe._inbox.extendleft(reversed(messages))
        pipe._cond.notify_all()


# -- older-handler-obeyed ---------------------------------------------------------


class LastRetiredOnlyExchanger(TaskExchanger):
    """``older-handler-obeyed``: the exchanger remembers one previous handler to ignore;
    a status event from any older one is taken for the current handler's and stops it.

    A stale PEER_GONE from the round just before (every shipped scenario) is ignored;
    one from two rounds back stops the round.
    """

    _previous: PipeHandler | None = None

    def _retire_current(self) -> None:
        if self.handler is not None:
            self._previous = self.handler
        super()._retire_current()

    def _on_status(self, handler: PipeHandler, message: Message) -> None:
        with self._lock:
            known = handler is self.handler or handler is self._previous
            current = self.handler
        if known:
            super()._on_status(handler, message)
        elif current is not None:
            current.stop(close_pipe=False)


# -- init-wait-blind --------------------------------------------------------------


class InitWaitBlindExecutor(ClientAPILauncherExecutor):
    """``init-wait-blind``: the wait for ``init()`` watches only the pipe, not the process.

    A training script that dies before it calls ``init()`` costs the whole
    ``pre_init`` wait, and the error says it "did not call init" instead of that it
    ended.  Every shipped scenario's processes live at least until their task.
    """

    def _await_init(self, handler: PipeHandler) -> None:
        deadline = time.monotonic() + self.timeouts.pre_init
        while True:
            self._check_abort()
            message = handler.get_next(WAIT_SLICE)
            if message is not None and message.topic == Topic.HELLO:
                self.timeline.record(
                    EventKind.INIT_SEEN, site=self.site, round=self._round,
                    pid=message.payload.get("pid"),
                )
                return
            if handler.state is HandlerState.STOPPED:
                raise ExecutionError(f"{self.site}: pipe handler stopped before init")
            if time.monotonic() > deadline:
                raise ExecutionError(
                    f"{self.site}: external process did not call init within "
                    f"{self.timeouts.pre_init}s"
                )


# -- launch-once-unreaped ---------------------------------------------------------


class UnreapedLaunchOnceExecutor(ClientAPILauncherExecutor):
    """``launch-once-unreaped``: the end of a launch-once job stops the process only when
    it did not exit by itself after END, so one that did is never reaped and the workers
    it started (a data loader in its process group) outlive the job."""

    def finalize(self) -> None:
        self._await_round_boundary()
        exited = False
        if self.launcher.launch_once and self.exchanger.handler is not None:
            self.exchanger.handler.send(Message(Topic.END, {"site": self.site}))
            exited = self._wait_for_exit(self.stop_wait)
        if not exited:  # the bug: "it exited, nothing to stop"
            self.launcher.stop_task()
        self.exchanger.close()


# -- splits-site-name -------------------------------------------------------------


class TemplateLauncher(SubprocessLauncher):
    """Renders its command line from one template string, as a launcher configured with
    a ``command:`` string does (``env FLRELIA_SITE={site} python -m ...``), and splits
    it on whitespace without quoting: a site name with a space becomes two words, and
    ``env`` runs the second one as the command.  ``site-N`` has no space: every
    shipped scenario passes."""

    TEMPLATE = "env {variable}={site} {command}"

    def __init__(self, command: Sequence[str], **kwargs: Any) -> None:
        super().__init__(command, **kwargs)
        line = self.TEMPLATE.format(
            variable=SITE_ENV, site=kwargs.get("site") or self.name, command=" ".join(command)
        )
        self._command = line.split()
