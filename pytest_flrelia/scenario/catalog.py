"""What a scenario may name: faults and their parameters, invariants, known bugs.

Declarations only.  The scenario loader validates against them, the schema
generator turns them into JSON Schema, the docs describe them; the code that
*injects* a fault or *checks* an invariant lives elsewhere and looks entries
up here by name.
"""

from __future__ import annotations

import difflib
import math
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from pytest_flrelia.contract.faults import LAST_CHUNK
from pytest_flrelia.contract.units import UnitError, parse_duration
from pytest_flrelia.errors import ParamError

Outcome = Literal["success", "failure"]
OUTCOMES: tuple[Outcome, ...] = ("success", "failure")


@dataclass(frozen=True)
class Invariant:
    """A property checked after a run; ``outcomes`` says when it applies by default."""

    name: str
    summary: str
    outcomes: frozenset[str]


_BOTH = frozenset(OUTCOMES)
INVARIANTS: Mapping[str, Invariant] = MappingProxyType(
    {
        inv.name: inv
        for inv in (
            Invariant("all_rounds_complete", "every round completes", frozenset({"success"})),
            Invariant(
                "tensors_intact",
                "every aggregated tensor matches the checksum the client published",
                _BOTH,
            ),
            Invariant(
                "no_premature_stop", "no process is stopped while its downloads are pending", _BOTH
            ),
            Invariant(
                "process_per_round",
                "a fresh subprocess per round (launch_once false) or exactly one (true)",
                frozenset({"success"}),
            ),
            Invariant("no_orphans", "no process of the run remains after it", _BOTH),
            Invariant(
                "stale_events_ignored", "status events from older rounds change nothing", _BOTH
            ),
            Invariant("within_bound", "the run ends within expect.within", _BOTH),
            Invariant(
                "clean_failure",
                "an expected failure is prompt and its error matches expect.error",
                frozenset({"failure"}),
            ),
            Invariant(
                "no_thread_crash",
                "no thread of the run dies of an unhandled exception",
                _BOTH,
            ),
            Invariant(
                "prompt_exit",
                "a process moves on right after its round: exits (one per round) or takes "
                "its next task (one for all rounds)",
                frozenset({"success"}),
            ),
            Invariant(
                "bounded_stop",
                "every stop reaps its process within stop_grace plus a margin",
                _BOTH,
            ),
            Invariant(
                "faults_delivered",
                "every fault the scenario injects acts at least once (unless optional)",
                _BOTH,
            ),
        )
    }
)
"""SPEC section 8 invariant names, in its order; ``faults_delivered`` judges the harness."""

UNPINNABLE: frozenset[str] = frozenset({"within_bound", "faults_delivered"})
"""Checks a ``catches`` entry may not pin (why: :data:`UNPINNABLE_WHY`)."""
UNPINNABLE_WHY = "a run that was slow (on a slow host) or a fault that never fired catches nothing"

AT_POINTS: tuple[str, ...] = (
    "before_init",
    "after_task_received",
    "after_result_sent",
    "mid_download",
    "after_download",
)
"""Points in a round where a signal, crash or broken pipe can strike the subprocess."""

SIGNAL_NAMES: tuple[str, ...] = (
    "SIGABRT",
    "SIGALRM",
    "SIGHUP",
    "SIGINT",
    "SIGKILL",
    "SIGQUIT",
    "SIGSTOP",
    "SIGTERM",
    "SIGUSR1",
    "SIGUSR2",
)
"""Fixed (not read from this platform) so the shipped JSON Schema is the same everywhere."""

ParamKind = Literal["duration", "int", "float", "signal", "choice", "bool", "chunk"]
PARAM_KINDS: tuple[ParamKind, ...] = (
    "duration", "int", "float", "signal", "choice", "bool", "chunk"
)
"""``chunk``: a chunk of a tensor, by its 1-based number or ``last``."""
SCOPE_KEYS: tuple[str, ...] = ("site", "round")
"""Keys that say where and when a fault strikes; each fault declares which it takes."""
ENTRY_KEYS: tuple[str, ...] = ("fault", "optional")
"""Keys every fault entry accepts besides its scope keys and parameters."""


@dataclass(frozen=True)
class Param:
    """One parameter of a fault, with ``default`` written as a user would write it."""

    name: str
    kind: ParamKind
    required: bool = False
    default: object = None
    """``None`` with ``required=False``: no static default; ``doc`` says what happens."""
    choices: tuple[str, ...] = ()
    doc: str = ""
    minimum: float | None = None


@dataclass(frozen=True)
class FaultType:
    """A fault a scenario can inject; ``example`` is a complete, valid ``faults`` entry."""

    name: str
    summary: str
    params: Mapping[str, Param]
    example: Mapping[str, object]
    round_required: bool = False
    min_round: int = 1
    """Smallest ``round`` the fault makes sense in (a stale event needs an older round)."""
    voids: tuple[str, ...] = ()
    """Invariants this fault makes meaningless, left out of a scenario's defaults."""
    per_round_only: bool = False
    """The fault acts on the deferred stop between rounds: it needs ``launch_once: false``."""
    scopes: tuple[str, ...] = SCOPE_KEYS
    """The scope keys that take effect; the loader refuses the others."""
    scope_note: str = ""
    """Why a scope key is refused, or how one is read."""
    delivered: str = ""
    """What counts as the fault having acted: when its ``fault`` event is recorded."""


def close_match(word: object, choices: Sequence[str]) -> str | None:
    """The valid choice a typo most likely meant, if any is close enough."""
    if not isinstance(word, str):
        return None
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return matches[0] if matches else None


def _params(*params: Param) -> Mapping[str, Param]:
    return MappingProxyType({p.name: p for p in params})


AUX_EVENT_POINTS: tuple[str, ...] = ("during_execute", "launch", "init")
"""Where in ``execute()`` an ``aux_event`` lands (its ``at:``)."""

_AT = Param(
    "at",
    "choice",
    required=True,
    choices=AT_POINTS,
    doc="the point in the round where it strikes",
)

_LAUNCH_ROUND = "`round` is the round the process was launched for"

CATALOG: Mapping[str, FaultType] = MappingProxyType(
    {
        fault.name: fault
        for fault in (
            FaultType(
                "delayed_download",
                "the server starts pulling this site's tensors `delay` late",
                _params(Param("delay", "duration", required=True, doc="how late the pull starts")),
                {"fault": "delayed_download", "site": "site-1", "round": 1, "delay": "500ms"},
                delivered="the server's download thread for the site slept `delay` and is about "
                "to pull its tensors (a result with nothing to download starts no pull)",
            ),
            FaultType(
                "early_sigterm",
                "a signal reaches the training subprocess at a chosen point",
                _params(
                    _AT,
                    Param(
                        "signal",
                        "signal",
                        default="SIGTERM",
                        choices=SIGNAL_NAMES,
                        doc="the signal sent to the subprocess",
                    ),
                ),
                {"fault": "early_sigterm", "at": "after_result_sent", "signal": "SIGTERM"},
                voids=("prompt_exit",),
                delivered="the training process reached the `at` point and sends itself the "
                "signal",
            ),
            FaultType(
                "stale_peer_gone",
                "a PEER_GONE from an older round's handler is delivered during `round`",
                _params(
                    Param(
                        "from_round",
                        "int",
                        minimum=1,
                        doc="the older round whose handler sends it, earlier than `round`; "
                        "default: round - 1",
                    )
                ),
                {"fault": "stale_peer_gone", "round": 2},
                round_required=True,
                min_round=2,
                delivered="a retired handler of `from_round` was found and handed the PEER_GONE",
            ),
            FaultType(
                "stuck_exit",
                "the subprocess does not exit after its download gate",
                _params(
                    Param(
                        "mode",
                        "choice",
                        default="hang",
                        choices=("hang", "thread"),
                        doc="hang: block in exit; thread: a non-daemon thread keeps it alive",
                    )
                ),
                {"fault": "stuck_exit", "mode": "thread"},
                voids=("prompt_exit",),
                delivered="the training process reached its exit and starts to hang there",
            ),
            FaultType(
                "slow_start",
                "the training script calls init() `delay` late",
                _params(Param("delay", "duration", required=True, doc="how late init() runs")),
                {"fault": "slow_start", "delay": "1s"},
                scope_note=_LAUNCH_ROUND,
                delivered="a training process starts its sleep before init()",
            ),
            FaultType(
                "crash",
                "the training subprocess exits with `code` at a chosen point",
                _params(_AT, Param("code", "int", default=1, doc="the exit code")),
                {"fault": "crash", "at": "after_task_received", "code": 3},
                voids=("prompt_exit",),
                delivered="the training process reached the `at` point and exits",
            ),
            FaultType(
                "heartbeat_loss",
                "the subprocess stops sending heartbeats",
                _params(
                    Param(
                        "duration",
                        "duration",
                        doc="how long heartbeats stay off; default: forever",
                    )
                ),
                {"fault": "heartbeat_loss", "duration": "3s"},
                voids=("prompt_exit",),
                scopes=("site",),
                scope_note="the agent's heartbeat thread belongs to no round",
                delivered="the agent's heartbeat thread stops before a heartbeat",
            ),
            FaultType(
                "broken_pipe",
                "the subprocess closes its pipe socket at a chosen point",
                _params(_AT),
                {"fault": "broken_pipe", "at": "after_task_received"},
                voids=("prompt_exit",),
                delivered="the training process reached the `at` point and closes its pipe",
            ),
            FaultType(
                "corrupt_chunk",
                "one bit of a served chunk flips after its digest was computed",
                _params(
                    Param(
                        "times",
                        "int",
                        default=1,
                        minimum=1,
                        doc="how many download attempts fail, each on one corrupted chunk",
                    ),
                    Param(
                        "chunk",
                        "chunk",
                        default=1,
                        doc="which chunk of a tensor is corrupted: its number, from 1, or `last`",
                    ),
                ),
                {"fault": "corrupt_chunk", "times": 2, "chunk": "last"},
                delivered="the download service flipped a bit of the chunk it serves "
                "(one `fault` event per corrupted chunk, naming its offset)",
            ),
            FaultType(
                "slow_aggregation",
                "the server aggregates `delay` late",
                _params(Param("delay", "duration", required=True, doc="how late aggregation runs")),
                {"fault": "slow_aggregation", "delay": "500ms"},
                scopes=("round",),
                scope_note="aggregation is server-wide",
                delivered="the server starts its sleep before it averages a training round",
            ),
            FaultType(
                "aux_event",
                "an auxiliary event arrives while execute() runs (by default while it "
                "waits for the result)",
                _params(
                    Param(
                        "at",
                        "choice",
                        default="during_execute",
                        choices=AUX_EVENT_POINTS,
                        doc="where in execute() it lands: `during_execute` (the wait for "
                        "the result, at `task_sent`), `launch` (the launch step, at "
                        "`pipe_cleared`, before the process starts) or `init` (the wait "
                        "for init, at `init_seen`, before the task is sent; only rounds "
                        "that launch a process)",
                    )
                ),
                {"fault": "aux_event", "round": 1, "at": "init"},
                delivered="the exchanger was handed the auxiliary event inside execute()",
            ),
            FaultType(
                "stop_error",
                "stop_task() raises once inside the deferred-stop thread",
                _params(),
                {"fault": "stop_error"},
                per_round_only=True,
                delivered="the deferred-stop thread raises before stop_task()",
            ),
            FaultType(
                "slow_stop",
                "the deferred stop reaps an exited process `delay` late, so the round "
                "boundary opens late",
                _params(
                    Param(
                        "delay",
                        "duration",
                        required=True,
                        doc="how long the deferred stop lingers after it saw the exit",
                    )
                ),
                {"fault": "slow_stop", "round": 1, "delay": "500ms"},
                per_round_only=True,
                delivered="the deferred-stop thread saw its process exit and starts to linger",
            ),
            FaultType(
                "stale_pipe_message",
                "a late END or PEER_GONE from the previous round's process is left unread "
                "in the pipe before `round`",
                _params(
                    Param(
                        "topic",
                        "choice",
                        default="END",
                        choices=("END", "PEER_GONE"),
                        doc="the status message left in the pipe",
                    )
                ),
                {"fault": "stale_pipe_message", "round": 2, "topic": "END"},
                round_required=True,
                min_round=2,
                per_round_only=True,
                delivered="the late message sits unread in the pipe",
            ),
            FaultType(
                "ignore_sigterm",
                "the training script ignores SIGTERM: only SIGKILL stops it",
                _params(),
                {"fault": "ignore_sigterm"},
                scope_note=_LAUNCH_ROUND,
                delivered="a SIGTERM reached the script and was ignored (a process never "
                "sent SIGTERM gives no event)",
            ),
            FaultType(
                "orphan_child",
                "the training script starts a child process that holds its stdout open",
                _params(),
                {"fault": "orphan_child"},
                scope_note=_LAUNCH_ROUND,
                delivered="the script started its child",
            ),
        )
    }
)
"""Every fault a scenario can name, by name."""


def validate_params(fault_name: str, raw: Mapping[str, object], where: str) -> dict[str, object]:
    """Parsed parameters of one fault entry, defaults filled in.

    ``raw`` may be the whole ``faults`` entry: ``fault``, ``optional`` and the
    scope keys the fault takes are skipped; a scope key it does not take is
    refused (it would be accepted and silently ignored otherwise).  Durations
    become seconds, signals :class:`signal.Signals`.  A parameter without a
    static default stays ``None``.  Raises :class:`ParamError` naming the
    offending key.
    """
    fault = CATALOG.get(fault_name)
    if fault is None:
        valid = sorted(CATALOG)
        raise ParamError(
            "fault", f"unknown fault {fault_name!r}", valid, close_match(fault_name, valid)
        )
    for key in raw:
        if key in SCOPE_KEYS and key not in fault.scopes:
            raise ParamError(
                key,
                f"fault {fault_name!r} does not take {key!r}"
                + (f": {fault.scope_note}" if fault.scope_note else ""),
                sorted((*fault.scopes, *fault.params, *ENTRY_KEYS)),
            )
    known = (*ENTRY_KEYS, *fault.scopes)
    for key in raw:
        if key not in known and key not in fault.params:
            valid = sorted((*fault.params, *known))
            raise ParamError(
                key,
                f"unknown parameter {key!r} for fault {fault_name!r}",
                valid,
                close_match(key, valid),
            )
    parsed: dict[str, object] = {}
    for name, param in fault.params.items():
        if name in raw:
            parsed[name] = parse_param(param, raw[name], f"{where}.{name}")
        elif param.required:
            raise ParamError(name, f"fault {fault_name!r} needs parameter {name!r}")
        elif param.default is not None:
            parsed[name] = parse_param(param, param.default, f"{where}.{name}")
        else:
            parsed[name] = None
    return parsed


def parse_param(param: Param, value: object, where: str) -> object:
    """One parameter value, parsed by its kind; :class:`ParamError` if it does not fit."""
    if param.kind == "duration":
        try:
            return parse_duration(value, where)
        except UnitError as err:
            raise ParamError(param.name, err.reason, err.valid) from err
    if param.kind in ("int", "float"):
        number: int | float
        if param.kind == "int" and isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif (
            param.kind == "float"
            and isinstance(value, (int, float))
            and not isinstance(value, bool)
        ):
            number = float(value)
        else:
            expected = "an integer" if param.kind == "int" else "a number"
            raise ParamError(param.name, f"expected {expected}, got {value!r}")
        if not math.isfinite(number):
            raise ParamError(param.name, f"expected a finite number, got {value!r}")
        if param.minimum is not None and number < param.minimum:
            raise ParamError(param.name, f"must be >= {param.minimum:g}, got {value!r}")
        return number
    if param.kind == "chunk":
        if value == LAST_CHUNK or (
            isinstance(value, int) and not isinstance(value, bool) and value >= 1
        ):
            return value
        raise ParamError(
            param.name, f"expected a chunk number >= 1 or {LAST_CHUNK!r}, got {value!r}"
        )
    if param.kind == "bool":
        if not isinstance(value, bool):
            raise ParamError(param.name, f"expected true or false, got {value!r}")
        return value
    valid = list(param.choices)
    if param.kind == "signal":
        if value in valid and hasattr(signal, str(value)):
            return signal.Signals[str(value)]
        raise ParamError(param.name, f"unknown signal {value!r}", valid, close_match(value, valid))
    if value not in valid:
        raise ParamError(param.name, f"invalid value {value!r}", valid, close_match(value, valid))
    return value


__all__ = [
    "AT_POINTS",
    "CATALOG",
    "ENTRY_KEYS",
    "INVARIANTS",
    "OUTCOMES",
    "PARAM_KINDS",
    "SCOPE_KEYS",
    "SIGNAL_NAMES",
    "UNPINNABLE",
    "UNPINNABLE_WHY",
    "FaultType",
    "Invariant",
    "Param",
    "ParamError",
    "ParamKind",
    "close_match",
    "parse_param",
    "validate_params",
]
