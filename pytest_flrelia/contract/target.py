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

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from pytest_flrelia.contract.faults import FaultSpec
from pytest_flrelia.contract.job import JobConfig
from pytest_flrelia.contract.result import Array, JobResult
from pytest_flrelia.contract.timeline import Event, EventKind, Timeline

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
    refused: Mapping[str, Mapping[str, str]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    """Parameter -> value -> why this target cannot deliver the fault with that value
    (nvflare: ``stuck_exit`` ``mode: thread``, since every process ends in ``os._exit``).
    A scenario using such a value is skipped with the reason; the explorer never draws it."""


@dataclass(frozen=True)
class Timing:
    """How quickly a target notices what happens; the judge's tolerances and the runner's
    deadline derive from it.  Every default is the reference's, and every field a real
    launcher is slower at defaults to 0 s: declaring nothing loosens nothing."""

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
    the job's ``stop_poll``.  All of these stretch with ``--flrelia-time-scale``."""
    gate_lag: float = 0.0
    """After the server downloaded a result's last tensor, how long its process's gate
    may take to open (nvflare: up to ~5 s, ``DownloadService._monitor_tx`` sleeps 5 s
    between looks; the reference opens it at once)."""
    launch: float = 0.0
    """How much longer than the reference starting one training process takes (nvflare:
    ~1.5 s, its import and CellNet connect); counted once per launch."""
    task_lag: float = 0.0
    """How late a task may reach a freshly started process (nvflare: one 5 s heartbeat,
    in ~20 % of launches); counted once per launch."""
    heartbeat_floor: float = 0.0
    """The soonest the target notices a silent peer, whatever shorter ``heartbeat`` the
    job asks for (nvflare: its heartbeat timeout must exceed the child's fixed 5 s
    interval, and a loss shows one interval after it); 0: the job's ``heartbeat``."""

    def poll_of(self, job: JobConfig, time_scale: float = 1.0) -> float:
        """The poll interval in a run of ``job``: the job's timeouts are scaled already,
        a poll the target declares is scaled here."""
        return job.timeouts.stop_poll if self.poll is None else self.poll * time_scale

    def release_slack(self, time_scale: float = 1.0) -> float:
        """How much later than the reference a released process may be seen to exit:
        its gate opening after the download (``gate_lag``)."""
        return self.gate_lag * time_scale

    def bound_slack(self, job: JobConfig, time_scale: float = 1.0) -> float:
        """How much longer than the reference a run of ``job`` (its timeouts scaled
        already) may take for what this target is slow at: per round the gate lag and a
        poll longer than the job's, per launch the start and a late first task, and once
        a heartbeat floor above the job's heartbeat.  The reference's is 0."""
        launches = 1 if job.launch_once else job.rounds
        poll = max(0.0, self.poll_of(job, time_scale) - job.timeouts.stop_poll)
        per_round = self.gate_lag * time_scale + poll
        per_launch = (self.launch + self.task_lag) * time_scale
        heartbeat = max(0.0, self.heartbeat_floor * time_scale - job.timeouts.heartbeat)
        return job.rounds * per_round + launches * per_launch + heartbeat


@dataclass(frozen=True)
class KnownIssue:
    """A bug of the target that a scenario item catches on some versions: the plugin
    reports that item as a *strict* xfail judged on ``check``.  Failing with ``check``
    leading is the expected failure; passing fails the gate (the bug is fixed: remove the
    entry), and failing with another leading check is a plain failure."""

    scenario: str
    """The scenario's name (``stubborn-process-is-killed``), as in its file."""
    check: str
    """The check that must lead the failure (``bounded_stop``): an invariant or ``expectation``."""
    reason: str
    """One line: what the bug is (shown with the xfail)."""
    anchor: str
    """Where the bug is written up, ``docs/nvflare.md#kb12-...``."""
    versions: str = ""
    """The affected versions, a PEP 440 specifier (``>=2.7.1,<2.9``; pre-releases
    included); empty: every version."""
    params: Mapping[str, object] | None = None
    """The matrix parameters of the affected items (``{"launch_once": False}``); ``None``:
    every item of the scenario."""
    variants: frozenset[str] = frozenset()
    """The target's variants it applies to (``--flrelia-known-bug``); empty: any."""
    details: str = ""
    """Markdown for the bug's row in the generated page: what happens, the log lines."""

    def __post_init__(self) -> None:
        SpecifierSet(self.versions)  # a malformed specifier fails where it is declared

    def applies(
        self,
        scenario: str,
        params: Mapping[str, object],
        version: str | None,
        variant: str | None = None,
    ) -> bool:
        """Whether this issue is about the item ``scenario`` with ``params``, run against
        ``version`` (``TargetInfo.version``: its last word is the version number) and
        ``variant``."""
        if scenario != self.scenario:
            return False
        if self.params is not None and any(
            k not in params or params[k] != v for k, v in self.params.items()
        ):
            return False
        if self.variants and variant not in self.variants:
            return False
        return self.matches_version(version)

    def matches_version(self, version: str | None) -> bool:
        """Whether ``version`` is one of the affected ones; a target that says no version
        is affected only by an issue of every version."""
        return _in_versions(self.versions, version)


RaceDetector = Callable[[Sequence[Event]], "str | None"]
"""Reads a failed run's whole timeline; returns one line of evidence that the race
happened in it (which events, when), or ``None``."""


@dataclass(frozen=True)
class KnownRace:
    """A race of the target that can fail any item it can reach, in some runs only.

    A strict xfail cannot hold it (most runs pass), and a pin of every cell it might
    touch would accept failures nobody saw.  So it is judged per run: an item that fails
    is reported as a known race (a non-strict xfail) only when ``detect`` finds the
    race's evidence in that run's own timeline; a failure without that evidence stays a
    failure, and a run the race did not hit simply passes or fails on its merits."""

    name: str
    """A short name (``F5``), as the write-up calls it."""
    reason: str
    """One line: what the race is (shown with the xfail)."""
    anchor: str
    """Where the race is written up, with its reproduction."""
    detect: RaceDetector
    versions: str = ""
    """The affected versions, a PEP 440 specifier (pre-releases included); empty: every version."""
    details: str = ""
    """Markdown for the race's row in the generated page: the mechanism, the log lines."""

    def __post_init__(self) -> None:
        SpecifierSet(self.versions)

    def matches_version(self, version: str | None) -> bool:
        return _in_versions(self.versions, version)


def _in_versions(versions: str, version: str | None) -> bool:
    """Whether ``version`` is one of ``versions`` (a specifier; empty: every version); a
    target that says no version is in an empty specifier only."""
    if not versions:
        return True
    number = version_number(version)
    if number is None:
        return False
    return SpecifierSet(versions).contains(number, prereleases=True)


def version_number(version: str | None) -> Version | None:
    """The version number in ``TargetInfo.version`` (``nvflare 2.7.2`` -> ``2.7.2``)."""
    if not version:
        return None
    try:
        return Version(version.split()[-1])
    except InvalidVersion:
        return None


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
    known_issues: Sequence[KnownIssue] = ()
    """Bugs of the target that scenario items catch: each such item is a strict xfail."""
    known_races: Sequence[KnownRace] = ()
    """Races of the target a failed run is checked for (its evidence in the timeline)."""
    error_aliases: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """A scenario's ``expect.error`` pattern -> this target's pattern of the same meaning
    (the scenarios say it in the reference's words): the expectation matches either and
    says which one matched."""
    named_sites: bool = False
    """Whether it runs a job with ``site_names`` or a ``name`` (any name the loader
    accepts: spaces, quotes, non-ASCII, up to 255 bytes) with those names for real; a
    scenario with names against a target that does not is skipped with the reason."""

    def known_race(self, events: Sequence[Event]) -> tuple[KnownRace, str] | None:
        """The first known race of this version whose evidence ``events`` hold, with it."""
        for race in self.known_races:
            if race.matches_version(self.version):
                evidence = race.detect(events)
                if evidence is not None:
                    return race, evidence
        return None

    def known_issue(
        self, scenario: str, params: Mapping[str, object], variant: str | None = None
    ) -> KnownIssue | None:
        """The known issue of the item ``scenario`` with ``params`` on this version, if any."""
        return next(
            (k for k in self.known_issues if k.applies(scenario, params, self.version, variant)),
            None,
        )


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
    "KnownIssue",
    "KnownRace",
    "ModelOracle",
    "RaceDetector",
    "RunContext",
    "Target",
    "TargetInfo",
    "Timing",
    "version_number",
]
