"""Which catalog faults the NVFlare target delivers, how, and why the others cannot be.

The target's ``TargetInfo`` reads :data:`FAULT_SUPPORT` and :data:`UNSUPPORTED` (for
2.7.2 and 2.8.x) or :func:`declarations` (per installed version: 2.7.1 has neither the
download path nor the deferred stop).  Importing this loads no NVFlare.  The code that
delivers them is :mod:`.parent_faults` (runner side) and :mod:`.child_faults` (in
the training process).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from packaging.version import Version

from pytest_flrelia.contract.target import FaultSupport
from pytest_flrelia.scenario.catalog import AT_POINTS, CATALOG

AT_DETAIL: Mapping[str, str] = MappingProxyType(
    {
        "before_init": "before `FlareAgent.start` (the child's `flare.init()`)",
        "after_task_received": "after `FlareAgent.get_task` returned a task",
        "after_result_sent": "after the child's `PipeHandler.send_to_peer` returned for its "
        "result (the CJ has it; the server has not pulled yet)",
        "mid_download": "after the first `ArrayDownloadable.produce_item` the server pulled "
        "(a download-service thread)",
        "after_download": 'when the agent logs "[subprocess] server download complete"',
    }
)
"""Where each ``at:`` point strikes in the child."""

NO_DOWNLOAD_POINTS = frozenset({"mid_download", "after_download"})
"""Points that exist only with NVFlare's download path (2.7.2rc12 and later)."""

_LIVE = " A live action, once per site and round in scope."
_MECHANICS: Mapping[str, str] = {
    "delayed_download": "The server's `NumpyArrayDecomposer.download` (its decode of the "
    "site's `LazyDownloadRef`s) waits `delay` before the real pull, for the server's cell "
    "and the site's first pull in the round; the child waits in its download gate.",
    "early_sigterm": "At the `at` point the training process sends itself the signal "
    "(`seams.kill`).",
    "stale_peer_gone": "At the client's `task_sent` of `round`, the `PipeHandler` the "
    "executor had in `from_round` is handed PEER_GONE through its own `_add_message` (the "
    "path of its reader's read error); 2.7.1 has one handler for the job." + _LIVE,
    "stuck_exit": "`hang`: the child's `os._exit` (how NVFlare's agent ends a one-round "
    "process, and how the script ends once `flare.receive()` returned no task) blocks; "
    "`thread` is refused: every process here ends in `os._exit`, which no thread holds. "
    "With one process for all rounds the "
    "process hangs after the job's END (`ABOUT_TO_END_RUN`'s `notify_end`), and the "
    "launcher's stop at `END_RUN` waits its `shutdown_timeout` (the job's stop wait) "
    "before it terminates it.",
    "slow_start": "At `before_init` the training process sleeps `delay`; the executor "
    "waits for it up to its external pre-init timeout.",
    "crash": "At the `at` point the training process exits with `code` "
    "(`seams.exit_process`).",
    "heartbeat_loss": "The child's `PipeHandler._heartbeat` (its heartbeat thread) waits "
    "`duration` before its loop, or forever; NVFlare's CJ notices after its "
    "`heartbeat_timeout`.",
    "broken_pipe": "At the `at` point the child closes its agent's pipe "
    "(`CellPipe.close()` is irreversible) and the striking thread blocks: the process "
    "stays, silent.",
    "corrupt_chunk": "The child's `ArrayDownloadable.produce_item` returns the npz bytes "
    "with one bit flipped, `times` calls. NVFlare serves each array as one item, so chunk "
    "1 and `last` are the same and a larger chunk number never exists; it has no digest "
    "nor retry: the npz CRC fails the server's decode.",
    "slow_aggregation": "The server stand-in's `aggregate` waits `delay` before it averages.",
    "aux_event": "`executor.handle_event(BEFORE_TASK_EXECUTION)` from another thread at "
    "`task_sent` (`during_execute`) or `pipe_cleared` (`launch`): the #4314 trigger; not "
    "at `init` (no `init_seen` is recorded)." + _LIVE,
    "stop_error": "The site's `SubprocessLauncher.stop_task` raises once when NVFlare's "
    "`deferred-stop-<task>` thread calls it.",
    "slow_stop": "The site's `SubprocessLauncher.stop_task` waits `delay` when NVFlare's "
    "`deferred-stop-<task>` thread calls it after it saw the process exit (that thread "
    "already polls every 1.0 s, so each boundary is that slow without the fault).",
    "stale_pipe_message": "Once the previous round's process is reaped, a late END or "
    "PEER_GONE from its FQCN goes through the CellPipe's own receive callback "
    "(`_receive_message`), or an ACTIVE FilePipe on the same directory writes it, "
    "unread." + _LIVE,
    "ignore_sigterm": "The training script's SIGTERM handler records the signal and "
    "ignores it.",
    "orphan_child": "The training script starts `python -c 'signal.pause()'`, which "
    "inherits its stdout/stderr (the launcher's log pipe) and the run tag.",
}


_REFUSED: Mapping[str, Mapping[str, Mapping[str, str]]] = {
    "stuck_exit": {
        "mode": {
            "thread": "every training process here ends through os._exit (NVFlare's agent "
            "ends a one-round process so, and child/train.py ends the others so because "
            "NVFlare's cells leave non-daemon threads behind): no thread can hold that exit",
        },
    },
}
"""Parameter values a fault cannot be delivered with here (``FaultSupport.refused``)."""


AUX_EVENT_DETAIL: Mapping[str, str] = MappingProxyType(
    {
        "during_execute": "at the CJ's `task_sent` (the parent's `PipeHandler.send_to_peer` "
        "of the task)",
        "launch": "at the CJ's `pipe_cleared` (`CellPipe.clear` / `FilePipe.clear`)",
    }
)
"""Where ``aux_event`` lands.  Not ``init``: the target records no ``init_seen`` (the
moment the CJ sees the child's first message is inside NVFlare's
``_wait_external_setup``), so a scenario asking for it is skipped."""


def _support(name: str, at: frozenset[str] | None = None) -> FaultSupport:
    fault = CATALOG[name]
    points = None
    detail: Mapping[str, str] = {}
    if "at" in fault.params and fault.params["at"].choices == AT_POINTS:
        points = at if at is not None else frozenset(AT_POINTS)
        detail = {p: AT_DETAIL[p] for p in sorted(points)}
    elif name == "aux_event":
        points = frozenset(AUX_EVENT_DETAIL)
        detail = AUX_EVENT_DETAIL
    return FaultSupport(
        scopes=frozenset(fault.scopes),
        at=points,
        mechanics=_MECHANICS[name],
        at_detail=MappingProxyType(dict(detail)),
        refused=MappingProxyType(dict(_REFUSED.get(name, {}))),
    )


FAULT_SUPPORT: Mapping[str, FaultSupport] = MappingProxyType(
    {name: _support(name) for name in CATALOG if name in _MECHANICS}
)
"""What the target delivers on 2.7.2 and 2.8.x: every fault of the catalog."""

UNSUPPORTED: Mapping[str, str] = MappingProxyType({})
"""Nothing of the catalog is undeliverable on 2.7.2 and 2.8.x."""

_NO_DOWNLOAD = "nvflare {v} sends the tensors inline with the result: the server pulls nothing"
_NO_DEFERRED = "nvflare {v} stops the process synchronously: it has no deferred-stop thread"
_LEGACY_UNSUPPORTED = {
    "delayed_download": _NO_DOWNLOAD,
    "corrupt_chunk": _NO_DOWNLOAD,
    "stop_error": _NO_DEFERRED,
    "slow_stop": _NO_DEFERRED,
}


_STRIKING_AT = frozenset(n for n, f in CATALOG.items()
                         if "at" in f.params and f.params["at"].choices == AT_POINTS)


def has_download_path(version: str) -> bool:
    """Whether ``version`` has the download path (2.7.2rc12 and later)."""
    return Version(version) >= Version("2.7.2rc12")


def declarations(version: str) -> tuple[Mapping[str, FaultSupport], Mapping[str, str]]:
    """``(faults, unsupported)`` for the installed ``version`` of nvflare."""
    if has_download_path(version):
        return FAULT_SUPPORT, UNSUPPORTED
    supported = {
        name: _support(name, frozenset(AT_POINTS) - NO_DOWNLOAD_POINTS)
        if name in _STRIKING_AT
        else support
        for name, support in FAULT_SUPPORT.items()
        if name not in _LEGACY_UNSUPPORTED
    }
    reasons = {name: why.format(v=version) for name, why in _LEGACY_UNSUPPORTED.items()}
    return MappingProxyType(supported), MappingProxyType(reasons)


__all__ = [
    "AT_DETAIL",
    "AUX_EVENT_DETAIL",
    "FAULT_SUPPORT",
    "UNSUPPORTED",
    "declarations",
    "has_download_path",
]
