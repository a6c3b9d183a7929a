"""The training subprocess's side of the runtime: pipe, download service and the gate.

``send()`` is where the fix of SPEC §2 lives on this side of the process
boundary: publish the tensors, send only their references, then *gate*: wait
until the server has downloaded every tensor (never when there is nothing to
download), and only then exit (``launch_once=False``) or go on serving rounds
(``launch_once=True``).  The process ends through an injectable exit seam.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from pytest_flrelia.contract import failpoints, seams
from pytest_flrelia.contract.events import training_lane
from pytest_flrelia.contract.failpoints import failpoint
from pytest_flrelia.contract.import_path import load
from pytest_flrelia.contract.job import (
    DOWNLOAD_CHUNK_BYTES,
    DOWNLOAD_COMPLETE_TIMEOUT,
    HEARTBEAT_INTERVAL,
    HEARTBEAT_TIMEOUT,
)
from pytest_flrelia.contract.seams import ExitFn
from pytest_flrelia.contract.timeline import EventKind, Timeline
from reference_impl.download import DownloadService, GateOutcome, TensorRef
from reference_impl.messages import Result, Task, result_message
from reference_impl.pipe import (
    PIPE_ADDRESS_ENV,
    PIPE_SECRET_ENV,
    Pipe,
    address_from_env,
)
from reference_impl.pipe_handler import PipeHandler
from reference_impl.watchdog import ParentWatchdog
from reference_impl.wire import Message, Topic

log = logging.getLogger(__name__)

SITE_ENV = "FLRELIA_SITE"
JOB_NAME_ENV = "FLRELIA_JOB_NAME"
DEFAULT_JOB = "job"
LAUNCH_ONCE_ENV = "FLRELIA_LAUNCH_ONCE"
AGENT_SETTINGS_ENV = "FLRELIA_AGENT_SETTINGS"
AGENT_CLASS_ENV = "FLRELIA_AGENT_CLASS"
LAUNCH_ROUND_ENV = "FLRELIA_LAUNCH_ROUND"
AGENT_HOOKS_ENV = "FLRELIA_AGENT_HOOKS"
"""Comma-separated ``module:function`` names, each called with the agent once it is
built: how a target installs its child-side fault code (nothing when empty)."""
DEFAULT_AGENT_CLASS = "reference_impl.agent:Agent"
EXIT_PEER_GONE = 75
"""Exit code when the client vanished (parent died, pipe gone): see :meth:`Agent._on_status`."""


@dataclass(frozen=True)
class AgentSettings:
    """What the launcher tells the subprocess, through :data:`AGENT_SETTINGS_ENV`."""

    site: str
    launch_once: bool
    download_complete_timeout: float = DOWNLOAD_COMPLETE_TIMEOUT
    heartbeat_interval: float = HEARTBEAT_INTERVAL
    heartbeat_timeout: float = HEARTBEAT_TIMEOUT
    chunk_bytes: int = DOWNLOAD_CHUNK_BYTES
    job: str = DEFAULT_JOB
    """The job's name (its workspace directory); the process says it in its ``init`` event."""

    def to_env(self) -> dict[str, str]:
        return {
            SITE_ENV: self.site,
            JOB_NAME_ENV: self.job,
            LAUNCH_ONCE_ENV: "1" if self.launch_once else "0",
            AGENT_SETTINGS_ENV: json.dumps(
                {
                    "download_complete_timeout": self.download_complete_timeout,
                    "heartbeat_interval": self.heartbeat_interval,
                    "heartbeat_timeout": self.heartbeat_timeout,
                    "chunk_bytes": self.chunk_bytes,
                }
            ),
        }

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AgentSettings:
        extra: dict[str, Any] = json.loads(env.get(AGENT_SETTINGS_ENV) or "{}")
        return cls(
            site=env.get(SITE_ENV) or "site-1",
            job=env.get(JOB_NAME_ENV) or DEFAULT_JOB,
            launch_once=env.get(LAUNCH_ONCE_ENV, "0") == "1",
            **extra,
        )


class Agent:
    """One training process's connection to its client.

    Lifecycle: ``init()`` once, then per round ``receive()`` and ``send()``,
    while ``is_running()``.  ``send()`` returns only after the gate.
    """

    service_class: type[DownloadService] = DownloadService
    """The download service it publishes on (a seam: a variant may serve differently)."""

    def __init__(
        self,
        pipe: Pipe,
        settings: AgentSettings,
        *,
        timeline: Timeline | None = None,
        exit_fn: ExitFn = seams.exit_process,
        on_client_gone: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.site = settings.site
        self._pipe = pipe
        self._timeline = timeline or Timeline(training_lane(settings.site))
        self._exit_fn = exit_fn
        self.on_client_gone: Callable[[str], None] = on_client_gone or (
            lambda reason: exit_fn(EXIT_PEER_GONE)
        )
        """What a vanished client does to this process (a seam: a hook may wrap it)."""
        self._handler: PipeHandler | None = None
        self._service: DownloadService | None = None
        self._running = threading.Event()
        self._round: int | None = None
        self._launch_round = _launch_round()
        self._closed = False

    @classmethod
    def from_environment(cls, *, exit_fn: ExitFn = seams.exit_process) -> Agent:
        """Build the agent class the launcher named, from the launcher's environment."""
        failpoints.configure_from_environment()
        settings = AgentSettings.from_env(os.environ)
        timeline = Timeline.from_environment(training_lane(settings.site))
        failpoints.set_recorder(failpoints.timeline_recorder(timeline))
        watchdog = ParentWatchdog()
        watchdog.start()
        failpoint("agent.before_init", site=settings.site, round=_launch_round())
        pipe = Pipe.connect(
            address_from_env(os.environ[PIPE_ADDRESS_ENV]),
            bytes.fromhex(os.environ[PIPE_SECRET_ENV]),
            name=f"agent-{settings.site}",
            timeline=timeline,
        )
        agent_class = _load_class(os.environ.get(AGENT_CLASS_ENV) or DEFAULT_AGENT_CLASS)
        agent = agent_class(
            pipe, settings, timeline=timeline, exit_fn=exit_fn, on_client_gone=watchdog.client_gone
        )
        for hook in _load_hooks(os.environ.get(AGENT_HOOKS_ENV) or ""):
            hook(agent)
        return agent

    @property
    def pipe(self) -> Pipe:
        """The connection to the client (a seam for the hooks of :data:`AGENT_HOOKS_ENV`)."""
        return self._pipe

    # -- the client API ----------------------------------------------------

    def init(self) -> None:
        """Start heartbeats and the download service; tell the client we are ready."""
        self._handler = PipeHandler(
            self._pipe,
            name=f"agent-{self.site}",
            heartbeat_interval=self.settings.heartbeat_interval,
            heartbeat_timeout=self.settings.heartbeat_timeout,
            status_callback=self._on_status,
            timeline=self._timeline,
            site=self.site,
        )
        self._service = self.service_class(
            site=self.site, chunk_bytes=self.settings.chunk_bytes, timeline=self._timeline
        )
        self._running.set()
        self._handler.start()
        self._handler.send(Message(Topic.HELLO, {"site": self.site, "pid": os.getpid()}))
        self._timeline.record(
            EventKind.INIT,
            site=self.site,
            launch_once=self.settings.launch_once,
            job=self.settings.job,
            workdir=os.getcwd(),
        )
        failpoint("agent.after_init", site=self.site, round=self._launch_round)

    def is_running(self) -> bool:
        return self._running.is_set()

    def receive(self, timeout: float | None = None) -> Task | None:
        """The next task, or ``None`` once the client said END or went away."""
        handler = self._require_handler()
        remaining = timeout
        while self.is_running():
            message = handler.get_next(0.1 if remaining is None else min(0.1, remaining))
            if message is not None and message.topic == Topic.TASK:
                task = Task.from_message(message)
                self._round = task.round
                self._timeline.record(
                    EventKind.TASK_RECEIVED, site=self.site, round=task.round, task_kind=task.kind
                )
                failpoint("agent.after_task_received", site=self.site, round=task.round)
                return task
            if remaining is not None:
                remaining -= 0.1
                if remaining <= 0:
                    return None
        return None

    def send(self, result: Result) -> None:
        """Publish, send references, gate on the download, then finish the round."""
        refs = self._publish(result)
        self._send_result(result, refs)
        self._gate(refs)
        self._finish_round()

    # -- the steps of send(), each overridable by a known-bug variant --------

    def _publish(self, result: Result) -> list[TensorRef]:
        if not result.tensors:
            return []
        service = self._require_service()
        return service.publish(result.tensors, round=self._current_round())

    def _send_result(self, result: Result, refs: list[TensorRef]) -> None:
        round = self._current_round()
        failpoint("agent.before_result_sent", site=self.site, round=round)
        message = result_message(self.site, round, result, [r.to_json() for r in refs])
        # Recorded first: the client may act on the result before this thread runs again.
        self._timeline.record(EventKind.RESULT_SENT, site=self.site, round=round, tensors=len(refs))
        if not self._require_handler().send(message):
            self._timeline.record(EventKind.ERROR, site=self.site, round=round,
                                  reason="the result could not be sent")
            raise ConnectionError(f"{self.site}: could not send the result of round {round}")
        failpoint("agent.after_result_sent", site=self.site, round=round)

    def _gate(self, refs: list[TensorRef]) -> None:
        """Block until the server downloaded every tensor of this round; never when none was.

        Three outcomes, each recorded and logged as what it is: the gate opens, times
        out, or is released because the service closed (the process is ending).
        """
        if not refs:
            return
        round = self._current_round()
        timeout = self.settings.download_complete_timeout
        self._timeline.record(EventKind.GATE_WAIT, site=self.site, round=round, timeout=timeout)
        service = self._require_service()
        outcome = service.wait_downloaded(round, timeout)
        if outcome is GateOutcome.COMPLETED:
            self._timeline.record(EventKind.GATE_OPEN, site=self.site, round=round)
            log.info("%s: the server downloaded round %s's %s tensors", self.site, round, len(refs))
            failpoint("agent.after_download", site=self.site, round=round)
            return
        pending = service.pending(round)
        if outcome is GateOutcome.CLOSED:
            self._timeline.record(EventKind.GATE_CLOSED, site=self.site, round=round,
                                  pending=pending)
            log.warning(
                "%s: round %s's download gate was released because the download service "
                "closed, with %s tensors not downloaded", self.site, round, pending
            )
        else:
            self._timeline.record(EventKind.GATE_TIMEOUT, site=self.site, round=round,
                                  timeout=timeout, pending=pending)
            log.error(
                "%s: the server did not download round %s within %ss (%s tensors pending)",
                self.site, round, timeout, pending
            )

    def _finish_round(self) -> None:
        """One process per round: exit now.  One for all rounds: serve the next."""
        if not self.settings.launch_once:
            self.exit(0)

    # -- shutdown ----------------------------------------------------------

    def exit(self, code: int) -> None:
        """Say goodbye on the pipe, release everything, end the process via the seam."""
        failpoint("agent.before_exit", site=self.site, round=self._round or self._launch_round)
        self.close()
        self._timeline.record(EventKind.EXIT, site=self.site, round=self._round, returncode=code)
        self._exit_fn(code)

    def close(self) -> None:
        """Send END, stop the handler, close the service and the pipe.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._running.clear()
        if self._handler is not None:
            self._handler.send(Message(Topic.END, {"site": self.site, "pid": os.getpid()}))
            self._handler.stop(close_pipe=True)
        else:
            self._pipe.close()
        if self._service is not None:
            self._service.close()

    def _on_status(self, message: Message) -> None:
        """END from the client ends the script's loop; a vanished client ends the process."""
        self._running.clear()
        if message.topic == Topic.PEER_GONE:
            reason = f"{self.site}: client is gone ({message.payload.get('reason')})"
            self.on_client_gone(reason)

    # -- helpers -----------------------------------------------------------

    def _require_handler(self) -> PipeHandler:
        if self._handler is None:
            raise RuntimeError("call init() first")
        return self._handler

    def _require_service(self) -> DownloadService:
        if self._service is None:
            raise RuntimeError("call init() first")
        return self._service

    def _current_round(self) -> int:
        if self._round is None:
            raise RuntimeError("send() before receive()")
        return self._round


def _launch_round() -> int | None:
    """The round this process was launched for (set by the executor per launch)."""
    value = os.environ.get(LAUNCH_ROUND_ENV)
    return int(value) if value else None


def _load_hooks(text: str) -> list[Callable[[Agent], None]]:
    hooks: list[Callable[[Agent], None]] = []
    for path in filter(None, (item.strip() for item in text.split(","))):
        hook = load(path)
        if not callable(hook):
            raise TypeError(f"{AGENT_HOOKS_ENV}: {path} is not callable")
        hooks.append(cast(Callable[[Agent], None], hook))
    return hooks


def _load_class(path: str) -> type[Agent]:
    cls = load(path)
    if not (isinstance(cls, type) and issubclass(cls, Agent)):
        raise TypeError(f"{path} is not an Agent class")
    return cls
