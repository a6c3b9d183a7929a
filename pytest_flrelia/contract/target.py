"""The target SPI: what the harness gives a system under test, and what it declares.

A *target* runs one job with the scenario's faults applied and records events of
the published contract (:mod:`pytest_flrelia.contract.events`) into the timeline
it is given.  Before anything runs, the harness reads its :class:`TargetInfo`: a
scenario that needs a fault, a scope, an ``at:`` point or an event the target
does not declare is skipped with the reason, never passed.  ``docs/targets.md``
is the guide, with a worked example.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Protocol, runtime_checkable

from pytest_flrelia.contract.faults import FaultSpec
from pytest_flrelia.contract.job import JobConfig
from pytest_flrelia.contract.result import Array, JobResult
from pytest_flrelia.contract.timeline import EventKind, Timeline

log = logging.getLogger(__name__)

REFERENCE_TARGET = "reference"
"""The built-in target's name (``--flrelia-target``'s default)."""
SCOPES = frozenset({"site", "round"})
HOOKS_WAIT = 10.0
"""How long a second :meth:`Abort.set` waits for the first one's hooks: a stuck hook must
not keep the harness from killing the run's processes."""


class Abort(threading.Event):
    """The run's abort signal.  The harness sets it when the bound passes, when
    pytest-timeout cuts the run and on Ctrl-C; the hooks a target registered run
    (in the setting thread, before :meth:`set` returns) *before* the harness
    kills the run's processes, so a target can stop launching first."""

    def __init__(self) -> None:
        super().__init__()
        self._hooks: list[Callable[[], None]] = []
        self._hooks_lock = threading.Lock()
        self._hooks_done = threading.Event()
        self._hooks_thread: int | None = None

    def on_abort(self, hook: Callable[[], None]) -> Callable[[], None]:
        """Call ``hook`` once when the run is aborted (at once if it already is);
        returns the function that unregisters it."""
        with self._hooks_lock:
            if not self.is_set():
                self._hooks.append(hook)
                registered = True
            else:
                registered = False
        if not registered:
            _call(hook)

        def unregister() -> None:
            with self._hooks_lock:
                if hook in self._hooks:
                    self._hooks.remove(hook)

        return unregister

    def set(self) -> None:
        """Abort, running the hooks; if another thread aborted first, return only once its
        hooks have run (at most :data:`HOOKS_WAIT`), so whoever sweeps next sweeps after them."""
        with self._hooks_lock:
            first = not self.is_set()
            if first:
                super().set()
                hooks, self._hooks = self._hooks, []
                self._hooks_thread = threading.get_ident()
            running = self._hooks_thread
        if not first:
            if running != threading.get_ident():  # a hook that aborts again must not wait on itself
                self._hooks_done.wait(HOOKS_WAIT)
            return
        try:
            for hook in hooks:
                _call(hook)
        finally:
            self._hooks_done.set()


def _call(hook: Callable[[], None]) -> None:
    try:
        hook()
    except Exception:  # one failing hook must not keep the others (or the sweep) from running
        log.exception("abort hook %r failed", hook)


@dataclass(frozen=True)
class RunContext:
    """What the harness gives a target for one run."""

    timeline: Timeline
    """Record every event here.  Its listeners run synchronously in the recording
    thread (the harness's live checks and triggered faults depend on it): record
    an event when it happens, not at the end of the run."""
    abort: Abort
    """Set when the run must end now; register hooks with ``abort.on_abort``."""
    env: Mapping[str, str]
    """The run tag: add it to the environment of every process the target starts
    (the harness finds, and after the run kills, every process carrying it)."""
    workdir: Path
    """A directory of this run's own, removed after it."""
    deadline: float
    """``time.monotonic()`` by which the run must have ended (the scenario's bound)."""
    variant: str | None
    """The selected variant (``--flrelia-known-bug`` for the reference target);
    ``None``: the target's default."""
    time_scale: float = 1.0
    """``--flrelia-time-scale``; the job's timeouts and the faults' durations are scaled already."""


@dataclass(frozen=True)
class FaultSupport:
    """How a target delivers one fault of the catalog."""

    scopes: frozenset[str] = SCOPES
    """The scope keys (``site``, ``round``) it honours for this fault."""
    at: frozenset[str] | None = None
    """The ``at:`` points it can strike at; ``None``: every point the catalog offers."""
    mechanics: str = ""
    """How it is delivered in this target, one sentence for the docs."""
    at_detail: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """``at:`` point -> where it strikes in this target (a failpoint, an event), for the docs."""


@dataclass(frozen=True)
class Timing:
    """How quickly a target notices what happens; the judge's tolerances derive from it."""

    exit_after_release: float = 0.5
    """After a process's round ended (its gate released), how long it may take to move on:
    exit (one process per round; beyond one ``poll`` for the launcher to see it) or take
    its next task (one for all rounds).  The default is the reference's, measured under
    ``-n 2`` on 2 cores: exit at most 25 ms after the gate, next task within 10 ms."""
    stop_margin: float = 0.5
    """Beyond ``stop_grace``, how long a forced stop may take to reap its process (the
    reference: snapshot of descendants, SIGKILL of the group, reap; at most 20 ms)."""
    poll: float | None = None
    """How often the deferred stop looks at its process, in unscaled seconds; ``None``:
    the job's ``stop_poll``.  All three stretch with ``--flrelia-time-scale``."""

    def poll_of(self, job: JobConfig, time_scale: float = 1.0) -> float:
        """The poll interval in a run of ``job``: the job's timeouts are scaled already,
        a poll the target declares is scaled here."""
        return job.timeouts.stop_poll if self.poll is None else self.poll * time_scale


class ModelOracle(Protocol):
    """Recomputes the global model a correct run must end with."""

    def expected_model(self, result: JobResult) -> Mapping[str, Array] | None:
        """The model ``result`` must hold, or ``None`` when it cannot be known."""
        ...


@dataclass(frozen=True)
class TargetInfo:
    """What a target declares; checked before a scenario runs."""

    name: str
    faults: Mapping[str, FaultSupport]
    """Fault name (as in the catalog) -> how it is delivered; a fault not here is unsupported."""
    events: frozenset[EventKind]
    """The event kinds it records."""
    variants: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """Selectable variants (known-bug slugs, installed versions) -> one line each."""
    timing: Timing = field(default_factory=Timing)
    oracle: ModelOracle | None = None
    """Recomputes the global model; ``None``: the model is not judged (it says so)."""
    version: str | None = None
    """What is installed, for the report header (``nvflare 2.7.2``)."""
    unsupported: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """Fault name -> why it cannot be delivered here (shown when a scenario is skipped)."""


@runtime_checkable
class Target(Protocol):
    """A system under test."""

    @property
    def info(self) -> TargetInfo: ...

    def run(
        self, job: JobConfig, faults: Sequence[FaultSpec], context: RunContext
    ) -> JobResult:
        """Run ``job`` with ``faults`` (each with its ``index``) applied and return
        what happened.  Raise only for a defect of the target itself (a harness
        error, no verdict): a failed job is a :class:`JobResult` with ``ok=False``."""
        ...


__all__ = [
    "REFERENCE_TARGET",
    "SCOPES",
    "Abort",
    "FaultSupport",
    "ModelOracle",
    "RunContext",
    "Target",
    "TargetInfo",
    "Timing",
]
