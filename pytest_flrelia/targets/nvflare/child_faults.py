"""The catalog's faults inside an NVFlare training process (the child ``train.py``).

Nothing in NVFlare is edited: the child's boot (``child/boot.py``, after its own
observation) calls :func:`install`, which wraps a few real NVFlare seams for the faults
planned for this site, and registers the returned :meth:`ChildFaults.strike` at the
``at:`` points.
Each fault records its ``fault`` event when it acts, never when it is planned.

Which seam each fault uses (NVFlare 2.7.2 / 2.8.x; 2.7.1 has no download path):

* ``early_sigterm`` / ``crash`` / ``broken_pipe``: at an ``at:`` point, the process
  signals itself, exits through :func:`contract.seams.exit_process`, or closes the
  agent's pipe (``FlareAgent.pipe.close()``, irreversible for a CellPipe) and blocks
  the striking thread, so the process keeps running silently.
* ``slow_start``: a sleep at ``before_init`` (before ``FlareAgent.start``).
* ``heartbeat_loss``: ``PipeHandler._heartbeat`` (the agent handler's heartbeat
  thread target, bound when the handler is built) waits before its loop, or forever.
* ``corrupt_chunk``: ``ArrayDownloadable.produce_item`` returns its npz bytes with one
  bit flipped: NVFlare serves one item per array, so chunk ``1`` and ``last`` are the
  array's only chunk, and each call of ``produce_item`` is one download attempt.
* ``stuck_exit``: ``hang`` wraps ``os._exit`` (NVFlare's agent ends a one-round child
  with it; a launch-once child's script ends through it once the job's END made
  ``flare.receive()`` return no task) and hangs there; ``thread`` is refused, since
  every process here ends in ``os._exit``, which no thread holds.
* ``ignore_sigterm``: a SIGTERM handler that records the signal and ignores it.
* ``orphan_child``: a ``python -c 'signal.pause()'`` child that inherits stdout/stderr
  (the launcher's pipe) and the run tag in its environment.

NVFlare is imported inside the fault that needs it: its seams differ across versions
(2.7.1 has no ``ArrayDownloadable``), and the declarations load this module without it.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from pytest_flrelia.contract import failpoints, seams
from pytest_flrelia.contract.faults import LAST_CHUNK, FaultSpec
from pytest_flrelia.targets.nvflare.points import ChildContext

log = logging.getLogger(__name__)

STRIKING = ("early_sigterm", "crash", "broken_pipe")
"""The faults that act at an ``at:`` point (:meth:`ChildFaults.strike`)."""
STANDING = ("slow_start", "heartbeat_loss", "corrupt_chunk", "stuck_exit",
            "ignore_sigterm", "orphan_child")
"""The faults installed once, at boot, on NVFlare's seams."""
CHILD_FAULTS = frozenset((*STRIKING, *STANDING))


class ChildFaults:
    """The planned faults of one training process, each delivered through its seam."""

    def __init__(
        self,
        ctx: ChildContext,
        *,
        kill: seams.KillFn = seams.kill,
        exit_fn: seams.ExitFn = seams.exit_process,
        block: Callable[[], object] = lambda: threading.Event().wait(),
    ) -> None:
        self.ctx = ctx
        self._kill = kill
        self._exit = exit_fn
        self._block = block
        self._agent: Any = None
        self._struck: set[tuple[int, int]] = set()
        self._lock = threading.Lock()
        self._undo: list[Callable[[], None]] = []

    # -- what applies ---------------------------------------------------------------

    def planned(self, *names: str) -> list[FaultSpec]:
        return [s for s in self.ctx.faults if s.fault in names and s.site in (None, self.ctx.site)]

    def _now(self, spec: FaultSpec) -> bool:
        return spec.applies_to(self.ctx.site, self.ctx.round)

    def _acted(
        self, spec: FaultSpec, did: str, *, ts: float | None = None, **detail: object
    ) -> None:
        self.ctx.fault(spec, did, **({} if ts is None else {"started": ts}), **detail)

    # -- at: points -----------------------------------------------------------------

    def strike(self, point: str) -> None:
        """The training process reached ``point``: every striking fault aimed at it acts
        once per round; ``slow_start`` waits at ``before_init``."""
        if point == "before_init":
            for spec in self.planned("slow_start"):
                if self._now(spec) and self._once(spec):
                    delay = float(str(spec.params["delay"]))
                    self._acted(spec, f"sleeps {delay:g}s before init()")
                    threading.Event().wait(delay)
        for spec in self.planned(*STRIKING):
            if spec.params.get("at") != point or not self._now(spec) or not self._once(spec):
                continue
            if spec.fault == "early_sigterm":
                sig = _signal_of(spec)
                self._acted(spec, f"signal({sig.name})", at=point)
                self._kill(os.getpid(), sig)
            elif spec.fault == "crash":
                code = int(str(spec.params.get("code", 1)))
                self._acted(spec, f"exit({code})", at=point)
                self._exit(code)
            else:
                self._break_pipe(spec, point)

    def _once(self, spec: FaultSpec) -> bool:
        key = (spec.index, self.ctx.round)
        with self._lock:
            if key in self._struck:
                return False
            self._struck.add(key)
            return True

    def _break_pipe(self, spec: FaultSpec, point: str) -> None:
        pipe = getattr(self._agent, "pipe", None)
        if pipe is None:
            log.error("broken_pipe at %s: no agent pipe to close yet (FlareAgent.start not seen)",
                      point)
            return
        self._acted(spec, f"closes the agent's pipe at {point} and goes silent")
        pipe.close()
        self._block()

    # -- standing faults --------------------------------------------------------------

    def install(self) -> None:
        """Wrap the NVFlare seams the planned faults need (only those)."""
        for spec in self.planned("early_sigterm"):  # at boot, in the main thread
            failpoints.undo_inherited_ignore(_signal_of(spec), f"fault {spec.tag}")
        if self.planned("broken_pipe"):
            self._watch_agent()
        for spec in self.planned("heartbeat_loss"):
            self._heartbeat_loss(spec)
        for spec in self.planned("corrupt_chunk"):
            if self._now(spec) or spec.round is None:
                self._corrupt_chunk(spec)
        for spec in self.planned("stuck_exit"):
            self._stuck_exit(spec)
        for spec in self.planned("ignore_sigterm"):
            if self._now(spec):
                self._ignore_sigterm(spec)
        for spec in self.planned("orphan_child"):
            if self._now(spec):
                self._orphan_child(spec)

    def uninstall(self) -> None:
        """Undo the class-level wraps (tests install them on the real classes)."""
        while self._undo:
            self._undo.pop()()

    def _patch(self, owner: Any, name: str, wrapper: Callable[..., Any]) -> Callable[..., Any]:
        original: Callable[..., Any] = getattr(owner, name)
        setattr(owner, name, wrapper)
        self._undo.append(lambda: setattr(owner, name, original))
        return original

    def _watch_agent(self) -> None:
        from nvflare.client.flare_agent import FlareAgent  # noqa: PLC0415

        faults = self
        start = FlareAgent.start

        def watched_start(agent: Any, *args: Any, **kwargs: Any) -> Any:
            faults._agent = agent
            return start(agent, *args, **kwargs)

        self._patch(FlareAgent, "start", watched_start)

    def _heartbeat_loss(self, spec: FaultSpec) -> None:
        from nvflare.fuel.utils.pipe.pipe_handler import PipeHandler  # noqa: PLC0415

        faults = self
        duration = spec.params.get("duration")
        heartbeat = PipeHandler._heartbeat

        def lost_heartbeat(handler: Any) -> None:
            if duration is None:
                faults._acted(spec, "the heartbeat thread stops before its first heartbeat")
                threading.Event().wait()
                return
            faults._acted(spec, f"the heartbeat thread pauses {float(str(duration)):g}s")
            threading.Event().wait(float(str(duration)))
            heartbeat(handler)

        self._patch(PipeHandler, "_heartbeat", lost_heartbeat)

    def _corrupt_chunk(self, spec: FaultSpec) -> None:
        from nvflare.app_common.np.np_downloader import ArrayDownloadable  # noqa: PLC0415

        faults = self
        chunk = spec.params.get("chunk") or 1
        left = [int(str(spec.params.get("times") or 1))]
        produce = ArrayDownloadable.produce_item

        def corrupting(downloadable: Any, index: int) -> bytes:
            data: bytes = produce(downloadable, index)
            if chunk not in (1, LAST_CHUNK) or not faults._now(spec):
                return data  # an array is one item: it has no chunk 2
            with faults._lock:
                if left[0] <= 0:
                    return data
                left[0] -= 1
            offset = len(data) // 2
            flipped = bytearray(data)
            flipped[offset] ^= 0x01
            faults._acted(spec, f"flipped bit 0 of byte {offset} of item {index}",
                          item=index, offset=offset)
            return bytes(flipped)

        self._patch(ArrayDownloadable, "produce_item", corrupting)

    def _stuck_exit(self, spec: FaultSpec) -> None:
        """``mode: hang`` only: the target refuses ``thread`` (``fault_support._REFUSED``),
        and one that got here anyway does not act, so ``faults_delivered`` says so."""
        if spec.params.get("mode", "hang") != "hang":
            return
        faults = self
        real_exit = os._exit

        def hanging_exit(code: int) -> None:
            if faults._now(spec):
                faults._acted(spec, f"hangs in os._exit({code})")
                threading.Event().wait()
            real_exit(code)

        self._patch(os, "_exit", hanging_exit)

    def _ignore_sigterm(self, spec: FaultSpec) -> None:
        def ignored(signum: int, frame: object) -> None:
            # Recorded from a thread: the handler may interrupt a record in this thread.
            threading.Thread(target=self._acted, args=(spec, "ignored a SIGTERM"),
                             daemon=True).start()

        previous = signal.signal(signal.SIGTERM, ignored)

        def restore() -> None:
            signal.signal(signal.SIGTERM, previous)

        self._undo.append(restore)

    def _orphan_child(self, spec: FaultSpec) -> None:
        started = time.monotonic()
        child = subprocess.Popen(  # inherits stdout/stderr: the launcher's log pipe
            [sys.executable, "-c", "import signal; signal.pause()"],
            start_new_session=False,
        )
        self._acted(spec, "started a child that holds stdout open", ts=started,
                    child_pid=child.pid)


FAULTS: ChildFaults | None = None
"""The process's fault code, once :func:`install` ran."""


def _signal_of(spec: FaultSpec) -> signal.Signals:
    """The signal an ``early_sigterm`` sends (SIGTERM unless it names another)."""
    given = spec.params.get("signal")
    return given if isinstance(given, signal.Signals) else signal.SIGTERM


def install(ctx: ChildContext) -> ChildFaults | None:
    """Install the faults planned for this process, once per context; ``None`` when no
    planned fault is child-side.  The caller (``child/boot.py``) registers the returned
    object's :meth:`ChildFaults.strike` at every ``at:`` point."""
    global FAULTS
    if FAULTS is not None and FAULTS.ctx is ctx:
        return FAULTS  # a second install would wrap every seam twice
    if not any(spec.fault in CHILD_FAULTS for spec in ctx.faults):
        return None
    FAULTS = ChildFaults(ctx)
    FAULTS.install()
    return FAULTS


__all__ = ["CHILD_FAULTS", "STANDING", "STRIKING", "ChildFaults", "install"]
