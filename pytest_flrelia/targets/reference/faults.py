"""How each fault of the catalog is injected: failpoints here and in the
training subprocesses, misbehaving-script switches, and live actions that
act on the running executors the moment a timeline event is seen.

:func:`build_plan` turns a scenario's ``faults`` into a :class:`FaultPlan`;
the target applies it.  The declarations (names, parameters, docs) live in
:mod:`pytest_flrelia.scenario.catalog`.

Every fault records a ``fault`` event when it acts, never when it is planned:
failpoint entries and script behaviours carry the fault's tag (``FAULT#ID``,
the id its position in the plan) to where they act, and a live action records
only an act that happened.  :func:`acted` reads them back.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from pytest_flrelia.contract import failpoints
from pytest_flrelia.contract.events import harness_lane
from pytest_flrelia.contract.faults import FaultSpec, describe
from pytest_flrelia.contract.job import JobConfig
from pytest_flrelia.contract.timeline import Event, EventKind, Timeline
from pytest_flrelia.targets.reference import child_faults
from pytest_flrelia.targets.reference.parent_faults import RetiredHandlers
from reference_impl.agent import AGENT_HOOKS_ENV
from reference_impl.download import CORRUPT_CHUNK
from reference_impl.executor import LauncherExecutor
from reference_impl.pipe import PIPE_SECRET_ENV, Pipe, PipeError
from reference_impl.train_script import BEHAVIOUR_ENV, IGNORE_SIGTERM, SPAWN_CHILD
from reference_impl.wire import Message, Topic

AT_FAILPOINTS: Mapping[str, str] = {
    "before_init": "agent.before_init",
    "after_task_received": "agent.after_task_received",
    "after_result_sent": "agent.after_result_sent",
    "mid_download": "download.after_chunk",
    "after_download": "agent.after_download",
}
"""Where in the training subprocess each ``at:`` point of a fault strikes."""

STALE_DELIVERY_TIMEOUT = 2.0
"""How long a live action waits for an injected message to reach the pipe."""

Executors = Mapping[str, LauncherExecutor]


Act = Callable[[Event, Executors, Timeline], str | None]
"""A live action's deed: what it did, or ``None`` when it could not act (it says why)."""


@dataclass
class LiveAction:
    """Runs ``act`` when an event matching ``trigger`` is recorded, once per site and round."""

    spec: FaultSpec
    description: str
    trigger: Callable[[Event], bool]
    act: Act
    round_offset: int = 0
    """The round the fault is aimed at, relative to the triggering event's round."""

    def attach(self, timeline: Timeline, executors: Executors) -> Callable[[], None]:
        fired: set[tuple[str | None, int | None]] = set()
        lock = threading.Lock()

        def listener(event: Event) -> None:
            if not self.trigger(event):
                return
            with lock:  # once per site and round: a fault without scope hits them all
                if (event.site, event.round) in fired:
                    return
                fired.add((event.site, event.round))
            started = time.monotonic()
            did = self.act(event, executors, timeline)
            if did is None:
                return
            # Stamped when the act began: what it caused is recorded after it.
            timeline.add(
                Event(
                    ts=started,
                    kind=EventKind.FAULT,
                    process=harness_lane(),
                    pid=os.getpid(),
                    site=event.site,
                    round=event.round,
                    detail={
                        "fault": self.spec.fault,
                        "fault_id": self.spec.index,
                        "did": did,
                        "description": self.description,
                        "affects_round": None
                        if event.round is None
                        else event.round + self.round_offset,
                    },
                )
            )

        return timeline.subscribe(listener)


@dataclass
class FaultPlan:
    """Everything the harness does to one run."""

    local_failpoints: list[str] = field(default_factory=list)
    subprocess_failpoints: list[str] = field(default_factory=list)
    script_behaviours: list[str] = field(default_factory=list)
    """``behaviour[scope]@FAULT#ID`` items for the training script."""
    live_actions: list[LiveAction] = field(default_factory=list)
    child_hooks: list[str] = field(default_factory=list)
    """``module:function`` hooks the training processes install (``FLRELIA_AGENT_HOOKS``):
    the child-side fault code, only when a planned fault needs it."""
    site_hooks: list[Callable[[LauncherExecutor], None]] = field(default_factory=list)
    """Called with each site's executor before it runs: parent-side fault code."""
    specs: list[FaultSpec] = field(default_factory=list)
    """The planned faults, each with its id (``index``) set to its position."""

    @property
    def faults(self) -> list[str]:
        """One readable line per planned fault, for reports."""
        return [describe(spec) for spec in self.specs]

    def local_spec(self) -> str:
        return ";".join(self.local_failpoints)

    def subprocess_env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        if self.subprocess_failpoints:
            env["FLRELIA_FAILPOINTS"] = ";".join(self.subprocess_failpoints)
        if self.script_behaviours:
            env[BEHAVIOUR_ENV] = ",".join(self.script_behaviours)
        if self.child_hooks:
            env[AGENT_HOOKS_ENV] = ",".join(self.child_hooks)
        return env

    def needs_child_faults(self) -> None:
        if child_faults.HOOK not in self.child_hooks:
            self.child_hooks.append(child_faults.HOOK)

    def site_ready(self, executor: LauncherExecutor) -> None:
        """A site's executor exists and has not run yet: install the parent-side faults."""
        for hook in self.site_hooks:
            hook(executor)

    def attach(self, timeline: Timeline, executors: Executors) -> Callable[[], None]:
        detachers = [action.attach(timeline, executors) for action in self.live_actions]

        def detach_all() -> None:
            for detach in detachers:
                detach()

        return detach_all


def build_plan(faults: Sequence[FaultSpec], job: JobConfig) -> FaultPlan:
    plan = FaultPlan()
    for index, given in enumerate(faults):
        spec = dataclasses.replace(given, index=index)
        _BUILDERS[spec.fault](spec, job, plan)
        plan.specs.append(spec)
    return plan


# -- one builder per fault ------------------------------------------------------


def _scope(spec: FaultSpec) -> str:
    parts = []
    if spec.site is not None:
        parts.append(f"site={failpoints.site_scope(spec.site)}")
    if spec.round is not None:
        parts.append(f"round={spec.round}")
    return f"[{','.join(parts)}]" if parts else ""


def _point(name: str, spec: FaultSpec) -> str:
    """The left side of ``spec``'s failpoint entry: ``name[scope]@FAULT#ID``."""
    return f"{name}{_scope(spec)}@{spec.tag}"


def _ms(seconds: object) -> int:
    assert isinstance(seconds, float | int)
    return round(float(seconds) * 1000)


def _at(spec: FaultSpec) -> str:
    return _point(AT_FAILPOINTS[str(spec.params["at"])], spec)


def _signal_name(value: object) -> str:
    return signal.Signals(value).name if isinstance(value, int) else str(value)


def _delayed_download(spec: FaultSpec, job: JobConfig, plan: FaultPlan) -> None:
    plan.local_failpoints.append(
        f"{_point('server.before_download', spec)}=sleep({_ms(spec.params['delay'])})"
    )


def _early_signal(spec: FaultSpec, job: JobConfig, plan: FaultPlan) -> None:
    plan.subprocess_failpoints.append(
        f"{_at(spec)}=1*signal({_signal_name(spec.params['signal'])})"
    )


def _crash(spec: FaultSpec, job: JobConfig, plan: FaultPlan) -> None:
    plan.subprocess_failpoints.append(f"{_at(spec)}=1*exit({spec.params['code']})")


def _broken_pipe(spec: FaultSpec, job: JobConfig, plan: FaultPlan) -> None:
    plan.needs_child_faults()
    plan.subprocess_failpoints.append(f"{_at(spec)}=1*call({child_faults.BREAK_PIPE})")


def _slow_start(spec: FaultSpec, job: JobConfig, plan: FaultPlan) -> None:
    plan.subprocess_failpoints.append(
        f"{_point('agent.before_init', spec)}=sleep({_ms(spec.params['delay'])})"
    )


def _stuck_exit(spec: FaultSpec, job: JobConfig, plan: FaultPlan) -> None:
    if spec.params.get("mode", "hang") == "hang":
        action = "hang"
    else:
        plan.needs_child_faults()
        action = f"call({child_faults.LINGER_THREAD})"
    plan.subprocess_failpoints.append(f"{_point('agent.before_exit', spec)}={action}")


def _heartbeat_loss(spec: FaultSpec, job: JobConfig, plan: FaultPlan) -> None:
    duration = spec.params.get("duration")
    action = "hang" if duration is None else f"1*sleep({_ms(duration)})"
    plan.subprocess_failpoints.append(f"{_point('pipe_handler.before_heartbeat', spec)}={action}")


def _corrupt_chunk(spec: FaultSpec, job: JobConfig, plan: FaultPlan) -> None:
    chunk = spec.params.get("chunk") or 1
    plan.subprocess_failpoints.append(
        f"{_point(f'{CORRUPT_CHUNK}.{chunk}', spec)}={spec.params.get('times', 1)}*return"
    )


def _slow_aggregation(spec: FaultSpec, job: JobConfig, plan: FaultPlan) -> None:
    plan.local_failpoints.append(
        f"{_point('server.before_aggregate', spec)}=sleep({_ms(spec.params['delay'])})"
    )


def _stop_error(spec: FaultSpec, job: JobConfig, plan: FaultPlan) -> None:
    plan.local_failpoints.append(
        f"{_point('executor.deferred_stop.before_stop', spec)}="
        "1*raise(RuntimeError, injected stop_task failure)"
    )


def _slow_stop(spec: FaultSpec, job: JobConfig, plan: FaultPlan) -> None:
    plan.local_failpoints.append(
        f"{_point('executor.deferred_stop.after_wait', spec)}=sleep({_ms(spec.params['delay'])})"
    )


def _ignore_sigterm(spec: FaultSpec, job: JobConfig, plan: FaultPlan) -> None:
    plan.script_behaviours.append(_point(IGNORE_SIGTERM, spec))


def _orphan_child(spec: FaultSpec, job: JobConfig, plan: FaultPlan) -> None:
    plan.script_behaviours.append(_point(SPAWN_CHILD, spec))


def _matches(kind: EventKind, spec: FaultSpec, round: int | None) -> Callable[[Event], bool]:
    def trigger(event: Event) -> bool:
        return (
            event.kind is kind
            and (spec.site is None or event.site == spec.site)
            and (round is None or event.round == round)
        )

    return trigger


def _not_delivered(timeline: Timeline, event: Event, reason: str) -> None:
    """A live action could not act: say why in the timeline (``faults_delivered`` fails)."""
    timeline.record(
        EventKind.ERROR, site=event.site, round=event.round, process=harness_lane(), reason=reason
    )


def _stale_peer_gone(spec: FaultSpec, job: JobConfig, plan: FaultPlan) -> None:
    assert spec.round is not None
    from_round = int(str(spec.params.get("from_round") or spec.round - 1))
    retired = RetiredHandlers()
    plan.site_hooks.append(retired.watch)

    def act(event: Event, executors: Executors, timeline: Timeline) -> str | None:
        old = retired.latest(str(event.site), from_round)
        if old is None:
            _not_delivered(
                timeline,
                event,
                f"no retired handler of round {from_round} to send a stale PEER_GONE",
            )
            return None
        old.notify_status(
            Message(
                Topic.PEER_GONE, {"reason": f"stale: injected into round {from_round}'s handler"}
            )
        )
        return f"round {from_round}'s retired handler reported PEER_GONE"

    plan.live_actions.append(
        LiveAction(
            spec,
            f"stale PEER_GONE from round {from_round}'s handler during round {spec.round}",
            _matches(EventKind.TASK_SENT, spec, spec.round),
            act,
        )
    )


AUX_EVENT_AT: Mapping[str, tuple[EventKind, str]] = {
    "during_execute": (EventKind.TASK_SENT, "while execute() waits for the result"),
    "launch": (EventKind.PIPE_CLEARED, "during execute()'s launch step"),
    "init": (EventKind.INIT_SEEN, "while execute() waits for init"),
}
"""The client event each ``aux_event`` ``at:`` point lands on, all inside ``execute()``."""


def _aux_event(spec: FaultSpec, job: JobConfig, plan: FaultPlan) -> None:
    kind, when = AUX_EVENT_AT[str(spec.params.get("at") or "during_execute")]

    def act(event: Event, executors: Executors, timeline: Timeline) -> str | None:
        executors[str(event.site)].exchanger.on_aux_event("aux-task")
        return f"on_aux_event('aux-task') {when}"

    plan.live_actions.append(
        LiveAction(spec, f"an auxiliary event {when}", _matches(kind, spec, spec.round), act)
    )


def _stale_pipe_message(spec: FaultSpec, job: JobConfig, plan: FaultPlan) -> None:
    """A goodbye from the previous round's process arrives after its handler stopped."""
    assert spec.round is not None
    topic = str(spec.params.get("topic") or Topic.END)

    def act(event: Event, executors: Executors, timeline: Timeline) -> str | None:
        executor = executors[str(event.site)]
        pipe = executor.exchanger.pipe
        secret = bytes.fromhex(executor.launch_env[PIPE_SECRET_ENV])
        try:
            late = Pipe.connect(pipe.address, secret, name=f"late-{event.site}")
        except PipeError as exc:
            _not_delivered(timeline, event, f"fault not injected: {exc}")
            return None
        try:
            before = pipe.pending
            late.send(Message(topic, {"site": event.site, "reason": "late goodbye"}))
            arrived = pipe.wait_pending(before + 1, STALE_DELIVERY_TIMEOUT)
        finally:
            late.close()
        if not arrived:
            _not_delivered(
                timeline,
                event,
                f"fault not injected: the late {topic} did not reach the pipe within "
                f"{STALE_DELIVERY_TIMEOUT:g}s",
            )
            return None
        return f"a late {topic} sits unread in the pipe"

    plan.live_actions.append(
        LiveAction(
            spec,
            f"a late {topic} left in the pipe before round {spec.round}",
            _matches(EventKind.DEFERRED_STOP_DONE, spec, spec.round - 1),
            act,
            round_offset=1,
        )
    )


_BUILDERS: Mapping[str, Callable[[FaultSpec, JobConfig, FaultPlan], None]] = {
    "delayed_download": _delayed_download,
    "early_sigterm": _early_signal,
    "stale_peer_gone": _stale_peer_gone,
    "stuck_exit": _stuck_exit,
    "slow_start": _slow_start,
    "crash": _crash,
    "heartbeat_loss": _heartbeat_loss,
    "broken_pipe": _broken_pipe,
    "corrupt_chunk": _corrupt_chunk,
    "slow_aggregation": _slow_aggregation,
    "aux_event": _aux_event,
    "stop_error": _stop_error,
    "slow_stop": _slow_stop,
    "stale_pipe_message": _stale_pipe_message,
    "ignore_sigterm": _ignore_sigterm,
    "orphan_child": _orphan_child,
}


def fault_names() -> Iterable[str]:
    return _BUILDERS.keys()
