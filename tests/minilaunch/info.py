"""What the mini launcher declares: the faults it delivers, the events it records."""

from __future__ import annotations

from types import MappingProxyType

from minilaunch.oracle import MiniOracle
from pytest_flrelia.contract.target import FaultSupport, TargetInfo, Timing
from pytest_flrelia.contract.timeline import EventKind

NAME = "mini"
EVERY_POINT = frozenset(
    {"before_init", "after_task_received", "after_result_sent", "mid_download", "after_download"}
)
STOP_ON_RESULT = "stop-on-result"

FAULTS = MappingProxyType(
    {
        "crash": FaultSupport(
            at=EVERY_POINT, mechanics="the child exits with `code` when it reaches `at`"
        ),
        "early_sigterm": FaultSupport(
            at=EVERY_POINT, mechanics="the child sends itself `signal` when it reaches `at`"
        ),
        "slow_start": FaultSupport(mechanics="the child sleeps `delay` before its hello"),
        "ignore_sigterm": FaultSupport(mechanics="the child's SIGTERM handler does nothing"),
        "orphan_child": FaultSupport(
            mechanics="the child starts a process that holds its stdout open"
        ),
        "stuck_exit": FaultSupport(mechanics="the child blocks (or leaves a thread) at its exit"),
        "corrupt_chunk": FaultSupport(
            mechanics="the child flips a bit of a chunk after computing its digest"
        ),
        "delayed_download": FaultSupport(mechanics="the server waits `delay` before its pull"),
        "slow_aggregation": FaultSupport(
            scopes=frozenset({"round"}), mechanics="the server waits `delay` before averaging"
        ),
        "slow_stop": FaultSupport(
            mechanics="the deferred stop waits `delay` between seeing the exit and the reap"
        ),
    }
)

UNSUPPORTED = MappingProxyType(
    {
        "stale_peer_gone": "minilaunch has no pipe handlers: no older handler can send PEER_GONE",
        "stale_pipe_message": "minilaunch's protocol has no status messages to leave in a pipe",
        "aux_event": "minilaunch's protocol has no auxiliary events",
        "heartbeat_loss": "minilaunch's child sends no heartbeats",
        "broken_pipe": "minilaunch's child talks over stdin/stdout, not a pipe socket",
        "stop_error": "minilaunch's deferred stop has no stop_task() that could raise",
    }
)

EVENTS = frozenset(
    {
        EventKind.JOB_START,
        EventKind.JOB_END,
        EventKind.ROUND_START,
        EventKind.ROUND_END,
        EventKind.LAUNCH,
        EventKind.INIT,
        EventKind.INIT_SEEN,
        EventKind.TASK_SENT,
        EventKind.TASK_RECEIVED,
        EventKind.RESULT_SENT,
        EventKind.RESULT_RECEIVED,
        EventKind.TENSOR_SERVED,
        EventKind.DOWNLOAD_START,
        EventKind.DOWNLOAD_RETRY,
        EventKind.DOWNLOAD_DONE,
        EventKind.DOWNLOAD_FAILED,
        EventKind.GATE_WAIT,
        EventKind.GATE_OPEN,
        EventKind.AGGREGATED,
        EventKind.STOP_REQUESTED,
        EventKind.SIGNAL_SENT,
        EventKind.EXIT,
        EventKind.EXIT_SEEN,
        EventKind.REAPED,
        EventKind.FAULT,
    }
)

INFO = TargetInfo(
    name=NAME,
    faults=FAULTS,
    events=EVENTS,
    variants=MappingProxyType(
        {STOP_ON_RESULT: "planted bug: stops the child as soon as its result arrives"}
    ),
    # The deferred stop waits on the process itself: it sees an exit at once.
    timing=Timing(exit_after_release=0.5, stop_margin=0.5, poll=0.0),
    oracle=MiniOracle(),
    version="minilaunch 1.0",
    unsupported=UNSUPPORTED,
)
