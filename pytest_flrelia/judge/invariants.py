"""The invariants of SPEC §5, checked over a run's timeline and process table.

Each check is a function ``(RunRecord) -> Check`` that declares the event kinds
it reads (:func:`~pytest_flrelia.judge.reads.reads`); :func:`evaluate` hands it
only those.  A check that has nothing to look at says so with
``applicable=False`` instead of passing silently, and only for a reason in the
scenario (it injects no stale event, its job publishes no tensors) or in how the
run ended (no round got that far): a target whose result says rounds completed
but that recorded none of the kinds a check needs fails it, naming the kinds.
One the scenario names in ``expect.invariants`` fails instead (:func:`evaluate`).
Tolerances come from the target's declared :class:`~pytest_flrelia.contract.target.Timing`.
"""

from __future__ import annotations

import dataclasses
import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from pytest_flrelia.contract.events import is_training
from pytest_flrelia.contract.faults import FaultSpec, acted, describe
from pytest_flrelia.contract.job import JobConfig
from pytest_flrelia.contract.result import Array, JobResult
from pytest_flrelia.contract.target import ModelOracle, Timing
from pytest_flrelia.contract.timeline import Event, EventKind
from pytest_flrelia.harness.thread_watch import THREAD_CRASH
from pytest_flrelia.judge.live_checks import LIVE_READS, live_violations
from pytest_flrelia.judge.reads import Reads, declared_reads, reads
from pytest_flrelia.judge.report import CheckFailure

STALE_FAULTS = ("stale_peer_gone", "stale_pipe_message", "aux_event")
GATE_RELEASES = (EventKind.GATE_OPEN, EventKind.GATE_TIMEOUT, EventKind.GATE_CLOSED)
"""The three ways a download gate ends (opened, timed out, released by the service closing)."""
FAULTS_DELIVERED = "faults_delivered"
MODEL_NOT_JUDGED = "global model not judged: target declares no model oracle"


@dataclass(frozen=True)
class RunRecord:
    """Everything the checks may look at."""

    result: JobResult | None
    events: Sequence[Event]
    survivors: Sequence[str]
    seconds: float
    within: float
    timed_out: bool
    outcome: str
    error_pattern: str | None
    harness_error: str | None = None
    oracle: ModelOracle | None = None
    """The target's model oracle (``TargetInfo.oracle``): recomputes the global model a
    correct run ends with; ``None``: the model is not judged, and the check says so."""
    time_scale: float = 1.0
    """``--flrelia-time-scale``: the harness's own margins stretch with the scenario's times."""
    faults: Sequence[FaultSpec] = ()
    """The planned faults, each with its id (``index``): what ``faults_delivered`` judges."""
    timing: Timing = field(default_factory=Timing)
    """The target's declared timing (``TargetInfo.timing``): the tolerances derive from it."""
    job: JobConfig | None = None
    """The job as run (scaled): what the scenario asked for, also of a run with no result."""
    error_aliases: Mapping[str, str] = field(default_factory=dict)
    """``TargetInfo.error_aliases``: the scenario's error pattern -> the target's own words."""
    within_slack: float = 0.0
    """The part of ``within`` the target's timing added to the scenario's bound."""

    @property
    def prompt_exit_seconds(self) -> float:
        return self.timing.exit_after_release * self.time_scale

    @property
    def stop_margin(self) -> float:
        return self.timing.stop_margin * self.time_scale

    @property
    def config(self) -> JobConfig | None:
        if self.job is not None:
            return self.job
        return self.result.config if self.result is not None else None

    def completed_rounds(self) -> int:
        """How many rounds the target's own result says completed."""
        return 0 if self.result is None else sum(r.ok for r in self.result.rounds)

    def completed_training_rounds(self) -> int:
        """How many of the completed rounds were training rounds (not ``validate_rounds``)."""
        if self.result is None:
            return 0
        validate = self.result.config.validate_rounds
        return sum(r.ok and r.round not in validate for r in self.result.rounds)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    expected: str
    seen: str
    at: float | None = None
    evidence: tuple[Event, ...] = ()
    applicable: bool = True

    def failure(self) -> CheckFailure:
        return CheckFailure(self.name, self.expected, self.seen, self.at, self.evidence)


def _pass(name: str, expected: str, seen: str) -> Check:
    return Check(name, True, expected, seen)


def _na(name: str, why: str) -> Check:
    return Check(name, True, "", why, applicable=False)


def _of(events: Sequence[Event], kind: EventKind) -> list[Event]:
    return [e for e in events if e.kind is kind]


def _silent(
    run: RunRecord, name: str, *kinds: EventKind, training_only: bool = False
) -> Check | None:
    """A failure when the target's result says rounds completed yet it recorded none of
    ``kinds``: a target that declares them and records nothing is not "not applicable".
    ``training_only``: only completed training rounds count (a validate round pulls
    nothing, so a job whose completed rounds all validated has no download to show)."""
    done = run.completed_training_rounds() if training_only else run.completed_rounds()
    if not done or any(e.kind in kinds for e in run.events):
        return None
    names = ", ".join(k.value for k in kinds)
    return Check(
        name,
        False,
        f"the target records {names} (it declares {'them' if len(kinds) > 1 else 'it'})",
        f"{done} rounds completed, yet no {' or '.join(k.value for k in kinds)} was recorded",
    )


def _all_inline(run: RunRecord) -> bool:
    """Whether results were sent and none published a tensor for the server to pull
    (``result_sent.tensors`` 0: the arrays travel inside the result, as NVFlare 2.7.1
    sends them); then only the global model can show a lost or corrupted tensor."""
    sent = _of(run.events, EventKind.RESULT_SENT)
    return bool(sent) and all(int(e.detail.get("tensors", 0)) == 0 for e in sent)


def _publishes_tensors(run: RunRecord) -> bool:
    """Whether the job asks its sites to publish tensors in some training round."""
    config = run.config
    if config is None:
        return True
    trains = any(r not in config.validate_rounds for r in range(1, config.rounds + 1))
    return trains and config.tensors.count > 0


# -- the expectation ----------------------------------------------------------------


@reads(optional=(EventKind.JOB_END,))
def expectation(run: RunRecord) -> Check:
    expected = f"outcome {run.outcome}" + (
        f" with an error matching /{run.error_pattern}/" if run.error_pattern else ""
    )
    if run.harness_error:
        return Check("expectation", False, expected, f"the harness failed: {run.harness_error}")
    if run.result is None:
        return Check("expectation", False, expected, "the run never finished")
    end = next((e for e in reversed(run.events) if e.kind is EventKind.JOB_END), None)
    at = end.ts if end else None
    if run.outcome == "success":
        if run.result.ok:
            return _pass("expectation", expected, "success")
        return Check("expectation", False, expected, f"failure: {run.result.error}", at)
    if run.result.ok:
        return Check("expectation", False, expected, "success", at)
    error = run.result.error or ""
    if run.error_pattern is None:
        return _pass("expectation", expected, f"failure: {error}")
    if re.search(run.error_pattern, error):
        return _pass("expectation", expected, f"failure: {error} (matched /{run.error_pattern}/)")
    alias = run.error_aliases.get(run.error_pattern)
    if alias is not None:
        expected += f" or the target's /{alias}/ of the same meaning"
        if re.search(alias, error):
            return _pass(
                "expectation",
                expected,
                f"failure: {error} (matched the target's alias /{alias}/)",
            )
    return Check("expectation", False, expected, f"failure: {error}", at)


# -- SPEC §8 invariants -----------------------------------------------------------------


@reads(optional=(EventKind.ROUND_END,))
def all_rounds_complete(run: RunRecord) -> Check:
    name = "all_rounds_complete"
    if run.result is None:
        return Check(name, False, "every round completes", "the run never finished")
    rounds = run.result.config.rounds
    done = [r.round for r in run.result.rounds if r.ok]
    expected = f"rounds 1..{rounds} complete"
    if len(done) == rounds:
        return _pass(name, expected, f"{rounds} of {rounds} rounds complete")
    failed = [e for e in _of(run.events, EventKind.ROUND_END) if not e.detail.get("ok")]
    first = failed[0] if failed else None
    reason = first.detail.get("error") if first else run.result.error
    return Check(
        name,
        False,
        expected,
        f"{len(done)} of {rounds} complete; round {len(done) + 1}: {reason}",
        first.ts if first else None,
        tuple(failed[:1]),
    )


@reads(EventKind.TENSOR_SERVED, EventKind.DOWNLOAD_DONE, optional=(EventKind.RESULT_SENT,))
def tensors_intact(run: RunRecord) -> Check:
    """Every tensor reached the server byte for byte, and the global model is exact.

    The digest of what the server's sink added (``download_done.bytes_digest``)
    must equal the digest of what the site published (``tensor_served``), and
    the global model must equal, byte for byte, the average the harness
    recomputes in the server's order of additions: a 1-ulp difference is
    corruption, not rounding.
    """
    name = "tensors_intact"
    published = {
        (e.site, e.round, e.detail.get("name")): e.detail
        for e in _of(run.events, EventKind.TENSOR_SERVED)
    }
    downloads = _of(run.events, EventKind.DOWNLOAD_DONE)
    if not downloads:
        if not _publishes_tensors(run):
            return _na(name, "the job publishes no tensors")
        if not _all_inline(run):
            silent = _silent(run, name, EventKind.DOWNLOAD_DONE, training_only=True)
            return silent or _na(name, "no training round got as far as a download")
    by_bytes = 0
    for done in downloads:
        key = (done.site, done.round, done.detail.get("name"))
        want = published.get(key)
        if want is None:
            continue
        field_name = "bytes_digest" if "bytes_digest" in want else "checksum"
        by_bytes += field_name == "bytes_digest"
        got = done.detail.get(field_name)
        if got != want[field_name]:
            what = "bytes" if field_name == "bytes_digest" else "chunk digests"
            return Check(
                name,
                False,
                f"{key} arrives as the {what} its site published",
                f"{field_name} {got} received != {want[field_name]} published",
                done.ts,
                (done,),
            )
    verified = (
        f"{len(downloads)} tensors verified, {by_bytes} by the digest of their bytes"
        if downloads
        else "nothing was pulled: every result carried its tensors inline"
    )
    if run.result is not None and run.result.ok:
        if run.oracle is None:
            return _pass(
                name, "every tensor intact", f"{verified}; {MODEL_NOT_JUDGED}"
            )
        try:
            expected_model = run.oracle.expected_model(run.result)
        except ValueError as exc:
            return Check(name, False, "the server added every site's tensors once", str(exc))
        if expected_model is None:
            return _pass(
                name, "every tensor intact", f"{verified}; global model not known to the oracle"
            )
        for tensor, array in expected_model.items():
            got_array = run.result.global_model.get(tensor)
            if got_array is None or not _same_bytes(got_array, array):
                return Check(
                    name,
                    False,
                    f"global tensor {tensor} is byte for byte the weighted average",
                    "it differs from the average recomputed by the harness: "
                    + _first_difference(got_array, array),
                )
        verified += "; global model exact"
    return _pass(name, "every tensor intact", verified)


def _same_bytes(got: Array, want: Array) -> bool:
    return got.dtype == want.dtype and got.shape == want.shape and got.tobytes() == want.tobytes()


def _first_difference(got: Array | None, want: Array) -> str:
    if got is None:
        return "missing"
    if got.dtype != want.dtype or got.shape != want.shape:
        return f"{got.dtype}{list(got.shape)} instead of {want.dtype}{list(want.shape)}"
    got_bytes = got.reshape(-1).view(np.uint8).reshape(got.size, -1)
    want_bytes = want.reshape(-1).view(np.uint8).reshape(want.size, -1)
    index = int(np.flatnonzero((got_bytes != want_bytes).any(axis=1))[0])
    return f"element {index} is {got.reshape(-1)[index]!r}, expected {want.reshape(-1)[index]!r}"


@reads(
    EventKind.RESULT_SENT,
    EventKind.STOP_REQUESTED,
    EventKind.GATE_OPEN,
    optional=(
        EventKind.GATE_TIMEOUT,
        EventKind.GATE_CLOSED,
        EventKind.ROUND_END,
        EventKind.FAILPOINT,
        EventKind.FAULT,
        EventKind.DOWNLOAD_DONE,
        EventKind.EXIT_SEEN,
    ),
)
def no_premature_stop(run: RunRecord) -> Check:
    """No stop reaches a process whose published tensors are still being downloaded.

    A process is released by its gate (opened, timed out, closed), by its own end (a
    fault that signals or ends it, or the launcher seeing it exit), or
    once the server has ``download_done`` for every tensor of that result: a stop after
    that loses nothing, however late the gate opens (nvflare's opens up to 5 s later)."""
    name = "no_premature_stop"
    published = [
        e for e in _of(run.events, EventKind.RESULT_SENT) if int(e.detail.get("tensors", 0))
    ]
    if not published:
        if not _publishes_tensors(run):
            return _na(name, "the job publishes no tensors")
        silent = _silent(run, name, EventKind.RESULT_SENT)
        return silent or _na(name, "no round got as far as a result with tensors")
    # Once a round failed the job is being torn down: stopping everything is then right.
    failed_round = next(
        (e.ts for e in _of(run.events, EventKind.ROUND_END) if not e.detail.get("ok")), None
    )
    stops = [
        e
        for e in _of(run.events, EventKind.STOP_REQUESTED)
        if failed_round is None or e.ts < failed_round
    ]
    for sent in published:
        released = [
            e
            for e in run.events
            if e.pid == sent.pid
            and e.ts >= sent.ts
            and is_training(e)
            and (e.kind in GATE_RELEASES or _ends_process(e))
        ] + [
            e  # the launcher saw it die: a stop after that cannot cut a download short
            for e in _of(run.events, EventKind.EXIT_SEEN)
            if e.detail.get("pid") == sent.pid and e.ts >= sent.ts
        ]
        released.sort(key=lambda e: e.ts)
        release_ts = released[0].ts if released else None
        downloaded = _downloaded_at(run.events, sent)
        if downloaded is not None and (release_ts is None or downloaded < release_ts):
            release_ts = downloaded
        for stop in stops:
            if stop.detail.get("pid") != sent.pid or stop.ts < sent.ts:
                continue
            if release_ts is None or stop.ts < release_ts:
                return Check(
                    name,
                    False,
                    f"{sent.site} round {sent.round}: pid {sent.pid} is stopped only after the "
                    f"server downloaded its {sent.detail.get('tensors')} tensors",
                    "stop requested while the download gate was still closed"
                    + (
                        ""
                        if release_ts is None
                        else f" ({(release_ts - stop.ts) * 1000:.0f} ms early)"
                    ),
                    stop.ts,
                    (sent, stop),
                )
    return _pass(name, "stops only after downloads", f"{len(published)} results checked")


def _downloaded_at(events: Sequence[Event], sent: Event) -> float | None:
    """When the server had every tensor of the result ``sent`` (``download_done`` of as
    many distinct tensors of that site and round as it published), or ``None``."""
    want = int(sent.detail.get("tensors", 0))
    names: set[object] = set()
    for e in events:
        if (
            e.kind is EventKind.DOWNLOAD_DONE
            and e.ts >= sent.ts
            and e.site == sent.site
            and e.round == sent.round
        ):
            names.add(e.detail.get("name"))
            if len(names) >= want:
                return e.ts
    return None


def _ends_process(event: Event) -> bool:
    """A failpoint hit (a fault's, or a bare one) that signals or ends its process."""
    if event.kind is EventKind.FAILPOINT:
        action = event.detail.get("action", "")
    elif event.kind is EventKind.FAULT:
        action = event.detail.get("did", "")
    else:
        return False
    return str(action).startswith(("signal", "exit"))


@reads(EventKind.RESULT_SENT, EventKind.LAUNCH)
def process_per_round(run: RunRecord) -> Check:
    name = "process_per_round"
    if run.result is None:
        return _na(name, "the run never finished")
    silent = _silent(run, name, EventKind.RESULT_SENT) or _silent(run, name, EventKind.LAUNCH)
    if silent is not None:
        return silent
    launch_once = run.result.config.launch_once
    by_site: dict[str, list[Event]] = defaultdict(list)
    for e in _of(run.events, EventKind.RESULT_SENT):
        by_site[str(e.site)].append(e)
    launches: dict[str, list[Event]] = defaultdict(list)
    for e in _of(run.events, EventKind.LAUNCH):
        launches[str(e.site)].append(e)
    for site, results in sorted(by_site.items()):
        pids = [e.pid for e in results]
        if launch_once:
            if len(set(pids)) != 1 or len(launches[site]) != 1:
                return Check(
                    name,
                    False,
                    f"{site}: one process serves every round",
                    f"{len(launches[site])} launches, result pids {pids}",
                    launches[site][-1].ts if launches[site] else None,
                    tuple(launches[site][:3]),
                )
        elif len(set(pids)) != len(pids):
            return Check(
                name,
                False,
                f"{site}: a fresh process per round",
                f"result pids {pids}: a process answered twice",
                results[-1].ts,
                tuple(results[-2:]),
            )
    mode = "one process for all rounds" if launch_once else "one process per round"
    return _pass(name, mode, f"{sum(len(v) for v in launches.values())} launches")


def no_orphans(run: RunRecord) -> Check:
    name = "no_orphans"
    if run.survivors:
        return Check(name, False, "no process of the run remains", "; ".join(run.survivors))
    return _pass(name, "no process of the run remains", "none remained")


@reads(
    EventKind.FAULT,
    EventKind.HANDLER_STOPPED,
    EventKind.RESULT_RECEIVED,
    optional=(EventKind.RESULT_SENT,),
)
def stale_events_ignored(run: RunRecord) -> Check:
    name = "stale_events_ignored"
    planned = [spec for spec in run.faults if spec.fault in STALE_FAULTS]
    if not planned:
        return _na(name, "the scenario injects no stale event")
    injected = [
        e for e in _of(run.events, EventKind.FAULT) if e.detail.get("fault") in STALE_FAULTS
    ]
    if not injected:
        if all(spec.optional for spec in planned):
            return _na(name, "its stale events are optional and none was injected")
        return Check(
            name,
            False,
            "the stale events the scenario plans are injected, and change nothing",
            f"no fault event of {', '.join(describe(spec) for spec in planned)} was recorded",
        )
    for fault in injected:
        site, round = fault.site, fault.detail.get("affects_round")
        what = fault.detail.get("description")
        stopped = [
            e
            for e in _of(run.events, EventKind.HANDLER_STOPPED)
            if e.site == site and e.round == round and e.ts >= fault.ts
        ]
        result = [
            e
            for e in _of(run.events, EventKind.RESULT_RECEIVED)
            if e.site == site and e.round == round
        ]
        # A round without tensors says END right after its result: a handler stopped
        # after such a result was stopped by that goodbye, not by the stale event (the
        # executor reads what it left).  A process holding tensors says nothing until its
        # download gate opens, so a stop of its handler before the read is the stale event's.
        sent = [
            e
            for e in _of(run.events, EventKind.RESULT_SENT)
            if e.site == site and e.round == round and not int(e.detail.get("tensors", 0))
        ]
        if stopped and sent and sent[0].ts < stopped[0].ts:
            stopped = []
        if stopped and (not result or stopped[0].ts < result[0].ts):
            return Check(
                name,
                False,
                f"{site} round {round} keeps its pipe handler despite {what}",
                "the current handler was stopped by the stale event",
                stopped[0].ts,
                (fault, stopped[0]),
            )
        if not result:
            return Check(
                name,
                False,
                f"{site} round {round} completes despite {what}",
                f"round {round} never got its result",
                fault.ts,
                (fault,),
            )
    return _pass(name, "stale events change nothing", f"{len(injected)} stale events ignored")


def within_bound(run: RunRecord) -> Check:
    name = "within_bound"
    expected = f"the run ends within {run.within:g}s" + (
        f" (the scenario's {run.within - run.within_slack:g}s + {run.within_slack:g}s the "
        "target's timing declares)"
        if run.within_slack
        else ""
    )
    if run.timed_out or run.seconds > run.within:
        return Check(
            name, False, expected, f"still running after {run.seconds:.2f}s; stopped by the harness"
        )
    return _pass(name, expected, f"ended after {run.seconds:.2f}s")


def clean_failure(run: RunRecord) -> Check:
    name = "clean_failure"
    expected = "a prompt failure whose error says what happened"
    if run.result is None or run.result.ok:
        return Check(name, False, expected, "the run did not fail")
    error = run.result.error or ""
    if not error.strip():
        return Check(name, False, expected, "the run failed without an error message")
    if run.timed_out:
        return Check(name, False, expected, "the failure was not prompt: the bound ran out first")
    return _pass(name, expected, error)


@reads(
    EventKind.RESULT_SENT,
    EventKind.EXIT,
    EventKind.GATE_OPEN,
    EventKind.ERROR,
    optional=(
        EventKind.GATE_TIMEOUT,
        EventKind.GATE_CLOSED,
        EventKind.RESULT_RECEIVED,
        EventKind.DOWNLOAD_DONE,
        EventKind.SIGNAL_SENT,
        EventKind.STOP_REQUESTED,
        EventKind.REAPED,
    ),
    launch_once=(EventKind.TASK_SENT, EventKind.TASK_RECEIVED),
)
def prompt_exit(run: RunRecord) -> Check:
    """A process moves on right after its round: one process per round exits by itself
    soon after its gate (after its result, with nothing to download) instead of lingering
    until the deferred stop kills it; one process for all rounds takes its next task as
    soon as it is sent instead of sitting in a gate that has nothing to wait for."""
    name = "prompt_exit"
    live = _live_failure(
        run,
        name,
        f"a per-round process exits by itself within {run.prompt_exit_seconds:g}s of its "
        "round's end (its download; its result, when it had nothing to download)",
    )
    if live is not None:
        return live
    if run.result is None:
        return _na(name, "the run never finished")
    sent = _of(run.events, EventKind.RESULT_SENT)
    if not sent:
        silent = _silent(run, name, EventKind.RESULT_SENT)
        return silent or _na(name, "no round got as far as a result")
    if run.result.config.launch_once:
        return _prompt_next_task(run, sent)
    for result in sent:
        mine = [
            e for e in run.events if e.pid == result.pid and is_training(e) and e.ts >= result.ts
        ]
        released: Event | None = None
        if int(result.detail.get("tensors", 0)):
            released = next((e for e in mine if e.kind in GATE_RELEASES), None)
            if released is None:
                continue  # never downloaded: another invariant (or the expectation) speaks
        start = released.ts if released else result.ts  # nothing to download: no gate
        exited = _exit_of(run.events, mine, result)
        if exited is None or exited.ts - start > run.prompt_exit_seconds:
            lingered = (
                "never exited"
                if exited is None
                else f"{'exited' if exited.kind is EventKind.EXIT else 'reaped'} "
                f"{exited.ts - start:.2f}s later"
            )
            return Check(
                name,
                False,
                f"{result.site} round {result.round}: pid {result.pid} exits within "
                f"{run.prompt_exit_seconds:g}s of its {'gate' if released else 'result'}",
                lingered,
                start,
                (result, *(x for x in (released, exited) if x)),
            )
    return _pass(name, "per-round processes exit promptly", f"{len(sent)} processes exited")


def _exit_of(events: Sequence[Event], mine: Sequence[Event], result: Event) -> Event | None:
    """When the process that sent ``result`` ended: its own ``exit``, or, when it never
    said so (killed, or a target whose processes do not record it), the launcher's
    ``reaped`` of that pid."""
    own = next((e for e in mine if e.kind is EventKind.EXIT), None)
    if own is not None:
        return own
    return next((e for e in _reaped(events, result.pid) if e.ts >= result.ts), None)


def _prompt_next_task(run: RunRecord, sent: Sequence[Event]) -> Check:
    name = "prompt_exit"
    received = _of(run.events, EventKind.TASK_RECEIVED)
    checked = 0
    for task in _of(run.events, EventKind.TASK_SENT):
        if task.round is None or task.round == 1:
            continue
        pickup = next(
            (e for e in received if e.site == task.site and e.round == task.round), None
        )
        if pickup is None:
            continue  # never received: all_rounds_complete speaks
        checked += 1
        if pickup.ts - task.ts > run.prompt_exit_seconds:
            return Check(
                name,
                False,
                f"{task.site} round {task.round}: the process takes its task within "
                f"{run.prompt_exit_seconds:g}s of it being sent",
                f"taken {pickup.ts - task.ts:.2f}s later: the process was held up in round "
                f"{task.round - 1}",
                task.ts,
                (task, pickup),
            )
    if not checked:
        silent = _silent(run, name, EventKind.TASK_SENT, EventKind.TASK_RECEIVED)
        return silent or _na(name, "no round after the first was taken by the process")
    return _pass(name, "the process takes every next task promptly", f"{checked} tasks checked")


@reads(
    EventKind.STOP_REQUESTED,
    EventKind.ERROR,
    optional=(EventKind.REAPED, EventKind.EXIT, EventKind.LAUNCH, EventKind.SIGNAL_SENT),
)
def bounded_stop(run: RunRecord) -> Check:
    """Every stop reaps its process within ``stop_grace`` plus the stop margin: a stop
    that signals the child only and waits (KB12) hangs the round boundary forever."""
    name = "bounded_stop"
    expected = f"every stop reaps its process within stop_grace + {run.stop_margin:g}s"
    live = _live_failure(run, name, expected)
    if live is not None:
        return live
    stops = _of(run.events, EventKind.STOP_REQUESTED)
    if not stops:
        silent = _silent(run, name, EventKind.LAUNCH, EventKind.STOP_REQUESTED)
        return silent or _na(name, "no stop was requested")
    if run.result is None:
        return _na(name, "the run never finished: its stop_grace is unknown")
    limit = run.result.config.timeouts.stop_grace + run.stop_margin
    last = run.events[-1].ts if run.events else 0.0
    for stop in stops:
        pid = stop.detail.get("pid")
        exited = next((e for e in _reaped(run.events, pid) if e.ts >= stop.ts), None)
        end = exited.ts if exited is not None else last
        if end - stop.ts > limit:
            took = "never" if exited is None else f"{exited.ts - stop.ts:.2f}s later"
            return Check(
                name,
                False,
                f"{stop.site}: pid {pid} is reaped within {limit:g}s of its stop",
                f"reaped {took}",
                stop.ts + limit,
                (stop, *(x for x in (exited,) if x)),
            )
    return _pass(name, expected, f"{len(stops)} stops reaped in time")


def _reaped(events: Sequence[Event], pid: object) -> list[Event]:
    """The launcher's ``reaped`` events for ``pid``: when that process was gone."""
    return [e for e in events if e.kind is EventKind.REAPED and e.detail.get("pid") == pid]


def _live_failure(run: RunRecord, name: str, expected: str) -> Check | None:
    """The violation of ``name`` a live check saw while the run ran, if any."""
    found = live_violations(run.events, name)
    if not found:
        return None
    first = found[0]
    seen = str(first.detail.get("reason"))
    return Check(name, False, expected, seen, first.ts, _live_evidence(run.events, first))


def _live_evidence(events: Sequence[Event], violation: Event) -> tuple[Event, ...]:
    """What led to a live violation: the stop and its signals (a pid), or the round's
    result, its last download and any signal that followed."""
    before = [
        e
        for e in events
        if e.ts <= violation.ts
        and e.site == violation.site
        and not is_training(e)
        and e != violation
    ]
    pid = violation.detail.get("pid")
    if pid is not None:
        mine = [e for e in before if pid in (e.detail.get("pid"), e.detail.get("pgid"))]
        return (*mine[-3:], violation)
    result = next(
        (e for e in before if e.kind is EventKind.RESULT_RECEIVED and e.round == violation.round),
        None,
    )
    if result is None:
        return (violation,)
    downloads = [
        e for e in before if e.kind is EventKind.DOWNLOAD_DONE and e.round == violation.round
    ]
    signals = [e for e in before if e.kind is EventKind.SIGNAL_SENT and e.ts >= result.ts]
    return (result, *downloads[-1:], *signals[:1], violation)


@reads(EventKind.ERROR)
def no_thread_crash(run: RunRecord) -> Check:
    """No thread of the run died of an unhandled exception (a dead heartbeat or
    deferred-stop thread fails nothing at once: rounds just wait out their timeouts)."""
    name = "no_thread_crash"
    expected = "no thread of the run dies of an unhandled exception"
    crashes = [
        e for e in _of(run.events, EventKind.ERROR) if e.detail.get("error") == THREAD_CRASH
    ]
    if crashes:
        first = crashes[0]
        seen = f"thread {first.detail.get('thread')} died: {first.detail.get('exception')}"
        return Check(name, False, expected, seen, first.ts, tuple(crashes[:3]))
    return _pass(name, expected, "none died")


@reads(EventKind.FAULT)
def faults_delivered(run: RunRecord) -> Check:
    """Every planned fault acted at least once: a ``fault`` event carries its id.  A fault
    that never fired proves nothing, however well the run went."""
    name = FAULTS_DELIVERED
    judged = [spec for spec in run.faults if not spec.optional]
    if not run.faults:
        return _na(name, "the scenario injects no fault")
    if not judged:
        return _na(name, "every fault of the scenario is optional")
    expected = "every fault acts at least once (faults marked optional: true excepted)"
    ids = acted(run.events)
    missing = [spec for spec in judged if spec.index not in ids]
    if missing:
        seen = "; ".join(f"fault {describe(spec)} never fired" for spec in missing)
        return Check(name, False, expected, seen)
    return _pass(name, expected, f"{len(judged)} of {len(judged)} faults acted")


CHECKS: Mapping[str, Callable[[RunRecord], Check]] = {
    "all_rounds_complete": all_rounds_complete,
    "tensors_intact": tensors_intact,
    "no_premature_stop": no_premature_stop,
    "process_per_round": process_per_round,
    "no_orphans": no_orphans,
    "stale_events_ignored": stale_events_ignored,
    "within_bound": within_bound,
    "clean_failure": clean_failure,
    "prompt_exit": prompt_exit,
    "no_thread_crash": no_thread_crash,
    "bounded_stop": bounded_stop,
    FAULTS_DELIVERED: faults_delivered,
}


@dataclass
class Verdict:
    checks: list[Check] = field(default_factory=list)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def earliest_first(self) -> list[Check]:
        """The failures, the violation seen first first: it leads the report."""
        return sorted(self.failures, key=lambda c: (c.at is None, c.at or 0.0))

    @property
    def leading(self) -> Check | None:
        """The failure that leads the report (seen first), ``None`` if none failed."""
        first = self.earliest_first()
        return first[0] if first else None

    @property
    def not_applicable(self) -> list[Check]:
        """Checks that had nothing to judge in the run (each says why in ``seen``)."""
        return [c for c in self.checks if not c.applicable]

    def lines(self) -> list[str]:
        """One line per check, ``passed``/``FAILED``/``n/a``: the verdict as a file shows it."""
        out = []
        for check in self.checks:
            if not check.applicable:
                out.append(f"n/a     {check.name}: {check.seen}")
            elif check.ok:
                out.append(f"passed  {check.name}: {check.seen}")
            else:
                out.append(f"FAILED  {check.name}: expected {check.expected}; seen {check.seen}")
        return out


def reads_of(check: str | Callable[[RunRecord], Check]) -> Reads:
    """What a check declares it reads: an invariant's name (its check after the run and
    its live check, if any), ``"expectation"``, or a check function."""
    if callable(check):
        return declared_reads(check)
    if check == "expectation":
        return declared_reads(expectation)
    return declared_reads(CHECKS[check]) | LIVE_READS.get(check, Reads(frozenset()))


def kinds_read_by(check: str | Callable[[RunRecord], Check]) -> frozenset[EventKind]:
    """Every event kind ``check`` reads (for the docs' "read by" column)."""
    return reads_of(check).kinds


def kinds_needed_by(
    check: str | Callable[[RunRecord], Check], *, launch_once: bool = True
) -> frozenset[EventKind]:
    """The kinds a target must declare for ``check`` to judge its runs of a job of that
    mode (the harness's own kinds left out; by default the stricter, ``launch_once``)."""
    return reads_of(check).needed_for(launch_once=launch_once)


def _judge(check: Callable[[RunRecord], Check], run: RunRecord) -> Check:
    """``check`` of ``run``, handed only the events of the kinds it declares."""
    kinds = declared_reads(check).kinds
    return check(dataclasses.replace(run, events=[e for e in run.events if e.kind in kinds]))


def evaluate(run: RunRecord, invariants: Sequence[str], *, named: Sequence[str] = ()) -> Verdict:
    """The expectation, then each invariant, in order.  An invariant in ``named`` (the
    scenario's ``expect.invariants``) with nothing to judge fails: named means judged.
    Each check sees only the event kinds it declares (:func:`kinds_read_by`)."""
    verdict = Verdict([_judge(expectation, run)])
    for name in invariants:
        check = _judge(CHECKS[name], run)
        if name in named and not check.applicable:
            check = Check(
                name,
                False,
                f"{name} has something to judge: expect.invariants names it",
                f"not applicable: {check.seen}",
            )
        verdict.checks.append(check)
    return verdict
