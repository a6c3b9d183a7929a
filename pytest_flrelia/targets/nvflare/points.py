"""The fault seam: where this target's observation lets fault code act.

This target observes NVFlare (:mod:`.observe` in the runner, :mod:`.child.boot` in each
training process); the fault code (``parent_faults`` / ``child_faults``, modules of their
own) registers itself here and is handed what it needs, so neither side edits the other:

* child side: :func:`on_child_boot` registrations run once the child's observation is
  installed, each with the :class:`ChildContext`; a registration adds actions for the
  ``at:`` points with :meth:`ChildContext.at`, and the observation calls :func:`strike` at
  each point as it is reached (where each is: :data:`AT_POINTS`).
* parent side: :func:`on_parent_start` registrations run in the runner before
  ``START_RUN`` with the :class:`ParentContext` (the job, the real per-site objects, the
  server cell, the runner's timeline to record on and to subscribe to).

The runner and ``boot`` import the fault modules by name (:func:`load_fault_module`), if
they exist, and call their ``install``: ``parent_faults.install(ParentContext, faults)``
before ``START_RUN``; ``child_faults.install(ChildContext)`` once the child's observation
is in, whose result's ``strike(point)`` the child then calls at every ``at:`` point.
Nothing here imports nvflare: the real objects are typed ``Any``.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType, ModuleType
from typing import Any

from pytest_flrelia.contract.events import client_lane, server_lane, training_lane
from pytest_flrelia.contract.faults import FaultSpec, fault_event
from pytest_flrelia.contract.job import JobConfig
from pytest_flrelia.contract.timeline import Event, EventKind, Listener, Timeline

log = logging.getLogger(__name__)

AT_POINTS: Mapping[str, str] = MappingProxyType({
    "before_init": "before `FlareAgent.start` (the client API's `flare.init`)",
    "after_task_received": "after `FlareAgent.get_task` returned a task (`flare.receive`)",
    "after_result_sent": "after the child's `PipeHandler.send_to_peer` returned for its result",
    "mid_download": "after the first `ArrayDownloadable.produce_item` (the server is pulling)",
    "after_download": 'on the `nvflare.client` log line "[subprocess] server download complete"',
})
"""The ``at:`` points a child strikes, and where in NVFlare each is reached."""

PARENT_FAULTS_MODULE = "pytest_flrelia.targets.nvflare.parent_faults"
CHILD_FAULTS_MODULE = "pytest_flrelia.targets.nvflare.child_faults"

Action = Callable[["ChildContext"], None]


def load_fault_module(name: str) -> ModuleType | None:
    """Import the fault module ``name`` if it exists (its import registers it); ``None`` if not.

    Only the module's own absence is tolerated: an import error inside it is a defect
    and propagates.
    """
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name == name:
            return None
        raise


# --- child side -------------------------------------------------------------------------


@dataclass
class ChildContext:
    """One training process, as the fault code sees it."""

    site: str
    launched_for: int
    """The round the launcher started this process for (1-based)."""
    faults: tuple[FaultSpec, ...]
    """The run's faults that apply to this site (any round): :meth:`FaultSpec.applies_to`
    with :attr:`round` picks this round's."""
    timeline: Timeline
    """The process's timeline (the training lane), written to the runner's events dir."""
    round: int = 0
    """The round of the task in hand (updated on each ``task_received``); before the first
    task, :attr:`launched_for`."""
    _actions: dict[str, list[Action]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if not self.round:
            self.round = self.launched_for

    @property
    def lane(self) -> str:
        return training_lane(self.site)

    def record(self, kind: EventKind, /, **detail: Any) -> Event:
        """Record ``kind`` in this process's lane, for this site and the round in hand."""
        return self.timeline.record(
            kind, site=self.site, round=self.round, process=self.lane, **detail
        )

    def fault(self, spec: FaultSpec, did: str, /, **detail: Any) -> Event:
        """Record that ``spec`` acted (``did``): the ``fault`` event the judge counts."""
        return fault_event(
            self.timeline, spec, did=did, site=self.site, round=self.round,
            process=self.lane, **detail,
        )

    def active(self, fault: str) -> list[FaultSpec]:
        """This site's faults named ``fault`` that apply to the round in hand."""
        return [s for s in self.faults if s.fault == fault and s.applies_to(self.site, self.round)]

    def at(self, point: str, action: Action) -> None:
        """Run ``action`` each time the process reaches ``point`` (one of :data:`AT_POINTS`)."""
        if point not in AT_POINTS:
            raise ValueError(f"unknown at: point {point!r}; known: {sorted(AT_POINTS)}")
        with self._lock:
            self._actions.setdefault(point, []).append(action)

    def strike(self, point: str) -> None:
        """Run the actions registered for ``point``, in registration order.

        A failing action is logged and recorded as an ``error``; it does not stop the
        process's own work (a fault meant to stop it does so by its own means).
        """
        with self._lock:
            actions = list(self._actions.get(point, ()))
        for action in actions:
            try:
                action(self)
            except Exception as err:
                log.exception("fault action at %s failed", point)
                self.record(EventKind.ERROR, reason=f"fault action at {point} failed: {err!r}")


_child_boot: list[Callable[[ChildContext], None]] = []
_child: ChildContext | None = None


def on_child_boot(fn: Callable[[ChildContext], None]) -> Callable[[ChildContext], None]:
    """Register ``fn`` to run once in each training process, after the observation is
    installed and before the training script runs; usable as a decorator."""
    _child_boot.append(fn)
    return fn


def boot_child(context: ChildContext) -> None:
    """Called by ``child.boot``: make ``context`` current and run the boot registrations."""
    global _child
    _child = context
    for fn in list(_child_boot):
        fn(context)


def child_context() -> ChildContext | None:
    """The current training process's context (``None`` outside one)."""
    return _child


def strike(point: str) -> None:
    """The observation reached ``point``: run what the fault code registered for it."""
    if point not in AT_POINTS:
        raise ValueError(f"unknown at: point {point!r}")
    if _child is not None:
        _child.strike(point)


# --- parent side ------------------------------------------------------------------------


@dataclass(frozen=True)
class SiteParts:
    """The real NVFlare objects of one site's CJ, as the runner built them."""

    site: str
    executor: Any
    """``ClientAPILauncherExecutor``."""
    launcher: Any
    """``SubprocessLauncher``."""
    pipe: Any
    """The executor's task pipe (``CellPipe`` or ``FilePipe``)."""
    cell: Any
    """The site's CJ cell (``site-N_cj``): what SubmitUpdate is sent from."""
    engine: Any
    """The site's engine stand-in (what ``fl_ctx.get_engine()`` returns)."""
    fl_ctx: Any
    """The site's ``FLContext``."""


@dataclass
class ParentContext:
    """The runner process, as the fault code sees it."""

    job: JobConfig
    faults: tuple[FaultSpec, ...]
    sites: Mapping[str, SiteParts]
    server_cell: Any
    """The in-process root ``Cell`` standing in for the server."""
    timeline: Timeline
    """The runner's timeline: every event the runner records, written to its events file."""
    server: Any = None
    """The stand-in server (our FedAvg over numpy), for server-side faults."""

    def record(
        self, kind: EventKind, /, *, site: str | None = None, round: int | None = None,
        **detail: Any,
    ) -> Event:
        """Record ``kind`` in the client lane of ``site``, or the server's if ``site`` is None."""
        return self.timeline.record(
            kind, site=site, round=round, process=self._lane(site), **detail
        )

    def fault(
        self, spec: FaultSpec, did: str, /, *, site: str | None = None,
        round: int | None = None, **detail: Any,
    ) -> Event:
        """Record that ``spec`` acted (``did``), in ``site``'s client lane or the server's."""
        return fault_event(
            self.timeline, spec, did=did, site=site, round=round,
            process=self._lane(site), **detail,
        )

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` for every later event the runner records (not the children's:
        those reach the harness only); returns the unsubscribe function.  It runs in the
        recording thread: be quick."""
        return self.timeline.subscribe(listener)

    @property
    def executors(self) -> Mapping[str, Any]:
        """Site -> its ``ClientAPILauncherExecutor``."""
        return {site: parts.executor for site, parts in self.sites.items()}

    @property
    def launchers(self) -> Mapping[str, Any]:
        """Site -> its ``SubprocessLauncher``."""
        return {site: parts.launcher for site, parts in self.sites.items()}

    @property
    def pipes(self) -> Mapping[str, Any]:
        """Site -> its task pipe."""
        return {site: parts.pipe for site, parts in self.sites.items()}

    def specs(self, fault: str) -> list[FaultSpec]:
        """The run's faults named ``fault``."""
        return [s for s in self.faults if s.fault == fault]

    @staticmethod
    def _lane(site: str | None) -> str:
        return server_lane() if site is None else client_lane(site)


_parent_start: list[Callable[[ParentContext], None]] = []


def on_parent_start(fn: Callable[[ParentContext], None]) -> Callable[[ParentContext], None]:
    """Register ``fn`` to run in the runner before ``START_RUN``; usable as a decorator."""
    _parent_start.append(fn)
    return fn


def start_parent(context: ParentContext) -> None:
    """Called by the runner before ``START_RUN``: run the parent registrations."""
    for fn in list(_parent_start):
        fn(context)


def applying(specs: Sequence[FaultSpec], site: str) -> tuple[FaultSpec, ...]:
    """The faults of ``specs`` that may strike ``site`` (in some round)."""
    return tuple(s for s in specs if s.site in (None, site))


__all__ = [
    "AT_POINTS",
    "CHILD_FAULTS_MODULE",
    "PARENT_FAULTS_MODULE",
    "Action",
    "ChildContext",
    "ParentContext",
    "SiteParts",
    "applying",
    "boot_child",
    "child_context",
    "load_fault_module",
    "on_child_boot",
    "on_parent_start",
    "start_parent",
    "strike",
]
