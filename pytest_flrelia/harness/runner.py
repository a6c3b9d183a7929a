"""Run one scenario: build the job, apply its faults, enforce its bound, judge it.

The job runs in a thread of this process (sites are threads, training code
runs in real subprocesses).  When the ``within`` bound passes, the run is
aborted, every process it started is killed (found by its run tag, wherever
it went), and the bound is reported as a failed invariant.  A run that raised
(in the harness or the target) is a :class:`HarnessError` with its traceback and
no verdict; a run pytest-timeout's deadline cut (:mod:`~pytest_flrelia.harness.cutoff`)
is ended the same way as one past its bound and reported as a :class:`ScenarioCut`.

Before anything runs, the target's declarations are checked
(:func:`~pytest_flrelia.harness.support.why_unsupported`): a scenario it cannot run
is a :class:`ScenarioUnsupported`, never a pass.  After a run, its events are
checked against the event contract: a target that breaks it is a harness error.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pytest_flrelia.contract import events as contract_events
from pytest_flrelia.contract.events import harness_lane, server_lane
from pytest_flrelia.contract.faults import FaultSpec, delivered, describe
from pytest_flrelia.contract.job import JobConfig
from pytest_flrelia.contract.result import JobResult
from pytest_flrelia.contract.target import Abort, RunContext, Target, TargetInfo
from pytest_flrelia.contract.timeline import Event, EventKind, Timeline
from pytest_flrelia.errors import (
    HarnessError,
    ScenarioCut,
    ScenarioFailure,
    ScenarioUnsupported,
    UnknownTargetError,
)
from pytest_flrelia.harness.cutoff import Cut
from pytest_flrelia.harness.processes import ProcessGuard
from pytest_flrelia.harness.processes import describe as describe_process
from pytest_flrelia.harness.settings import Settings
from pytest_flrelia.harness.support import why_unsupported
from pytest_flrelia.harness.thread_watch import watch_thread_crashes
from pytest_flrelia.judge.invariants import FAULTS_DELIVERED, RunRecord, Verdict, evaluate
from pytest_flrelia.judge.live_checks import watch_live
from pytest_flrelia.judge.report import (
    Against,
    cut_report,
    failure_report,
    harness_error_report,
    write_artifacts,
    write_verdict,
)
from pytest_flrelia.scenario.catalog import CATALOG
from pytest_flrelia.scenario.loader import Scenario, default_invariants
from pytest_flrelia.targets import Targets

log = logging.getLogger(__name__)

ABORT_GRACE = 15.0
"""After the bound: how long the aborted job may take to unwind before we give up on it."""
SETTLE = 1.0
"""After the run: how long its processes may still take to exit before they count as orphans."""
WORKDIR_PREFIX = "flrelia-run-"
"""A run's own directory (:attr:`RunContext.workdir`), removed after it."""


@dataclass(frozen=True)
class ScenarioOutcome:
    """What a passing (or failing) run looked like: for reports and the session summary."""

    scenario: Scenario
    verdict: Verdict
    seconds: float
    faults: tuple[str, ...]
    result: JobResult | None
    events: tuple[Event, ...] = ()
    """The whole timeline, also of a run the bound cut short (it has no ``result``)."""
    delivered: tuple[str, ...] = ()
    """The planned faults (as in ``faults``) that acted at least once."""


def run_scenario(
    scenario: Scenario,
    settings: Settings,
    *,
    nodeid: str | None = None,
    cut: Cut | None = None,
    targets: Callable[[str], Target] | None = None,
) -> ScenarioOutcome:
    """Run ``scenario`` against its target (``targets`` finds it by name: the session's;
    by default the built-in and installed ones); raise :class:`ScenarioUnsupported` if
    the target cannot run it, :class:`ScenarioFailure` if it fails, :class:`HarnessError`
    if the harness or the target raised, :class:`ScenarioCut` if ``cut`` (pytest-timeout's
    deadline) fires first."""
    __tracebackhide__ = True  # the report says it all; these frames would only repeat it
    started = time.monotonic()
    try:
        name = target_name(scenario, settings)
        try:
            target = (targets or Targets())(name)
        except UnknownTargetError as err:
            raise ScenarioUnsupported(f"target {name!r} is not available: {err}") from None
        reason = unsupported_reason(scenario, settings, target)
        if reason is not None:
            raise ScenarioUnsupported(reason)
        return _run(scenario, settings, nodeid, cut or Cut(math.inf), target)
    except (ScenarioFailure, ScenarioUnsupported):
        raise
    except Exception:
        error = traceback.format_exc()
        raise HarnessError(
            _harness_report(scenario, settings, error, (), time.monotonic() - started, nodeid)
        ) from None


def target_name(scenario: Scenario, settings: Settings) -> str:
    """The scenario's own ``target:``, else the session's."""
    return scenario.target or settings.target


def unsupported_reason(scenario: Scenario, settings: Settings, target: Target) -> str | None:
    """Why ``target`` cannot run ``scenario`` in this session (``None``: it can): the
    selected variant is not one of its own, or it lacks what the scenario needs."""
    info = target.info
    if settings.known_bug is not None and settings.known_bug not in info.variants:
        return (
            f"target {info.name!r} has no variant {settings.known_bug!r}"
            + (f" (its variants: {', '.join(info.variants)})" if info.variants else "")
        )
    return why_unsupported(scenario, info, applicable_invariants(scenario))


def _run(
    scenario: Scenario, settings: Settings, nodeid: str | None, cut: Cut, target: Target
) -> ScenarioOutcome:
    __tracebackhide__ = True
    with tempfile.TemporaryDirectory(prefix=WORKDIR_PREFIX) as workdir:
        return _run_in(scenario, settings, nodeid, cut, Path(workdir), target)


def _run_in(
    scenario: Scenario,
    settings: Settings,
    nodeid: str | None,
    cut: Cut,
    workdir: Path,
    target: Target,
) -> ScenarioOutcome:
    __tracebackhide__ = True
    scale = settings.time_scale
    job = _scaled_job(scenario.job, scale)
    faults = tuple(  # each with its id: its position, which its ``fault`` events carry
        dataclasses.replace(_scaled_fault(f, scale), index=i) for i, f in enumerate(scenario.faults)
    )
    info = target.info
    slack = info.timing.bound_slack(job, scale)  # what the target declares it is slow at
    within = scenario.expect.within_or(settings.default_within) * scale + slack
    guard = ProcessGuard()
    timeline = Timeline(server_lane())
    abort = Abort()
    box: dict[str, object] = {}
    invariants = applicable_invariants(scenario)
    settled = threading.Event()
    """Set when the job ends, or when a live check has seen a violation."""

    def run() -> None:
        try:
            with watch_thread_crashes(timeline, abort):
                box["result"] = target.run(
                    job,
                    faults,
                    RunContext(
                        timeline=timeline,
                        abort=abort,
                        env=guard.env,
                        workdir=workdir,
                        deadline=started + within,
                        variant=settings.known_bug,
                        time_scale=scale,
                    ),
                )
        except BaseException:  # reported as a harness error, never swallowed
            box["error"] = traceback.format_exc()
        finally:
            settled.set()

    started = time.monotonic()
    thread = threading.Thread(target=run, name=f"flrelia-job-{scenario.name}", daemon=True)
    with watch_live(
        timeline,
        abort,
        invariants=invariants,
        job=job,
        on_violation=lambda _: settled.set(),
        time_scale=scale,
        timing=info.timing,
    ) as live, cut.listening(settled.set):
        thread.start()
        try:
            settled.wait(within)
            if live.violation is None and not cut.fired:  # the job ended: it is returning
                thread.join(max(0.0, started + within - time.monotonic()))
        except BaseException:
            # Ctrl-C, or a signal's exception: nothing of the run may outlive it, not even
            # its job directory (the job thread removes it as it unwinds).
            _stop(abort, guard, thread)
            if settings.report_dir is not None:
                write_artifacts(settings.report_dir, scenario.name, timeline.events())
            raise
        if cut.fired:
            timeline.record(EventKind.ERROR, process=harness_lane(), reason=cut.message())
            _stop(abort, guard, thread)
            raise ScenarioCut(
                _cut_report(scenario, settings, info, timeline, started, cut, nodeid)
            )
        timed_out = thread.is_alive() and live.violation is None
        if timed_out:
            timeline.record(
                EventKind.ERROR, process=harness_lane(), reason=f"bound of {within:g}s passed"
            )
        if thread.is_alive():
            # Past the bound, or judged already: a stuck stop may never unwind by itself.
            # The abort (the target's hooks) comes before the sweep: it stops launching first.
            abort.set()
            guard.kill_all()
            thread.join(ABORT_GRACE)
    seconds = time.monotonic() - started
    survivors = guard.settle(SETTLE)
    orphans = [describe_process(p) for p in survivors]
    guard.kill_all()
    result = box.get("result")
    def harness_error(error: str) -> HarnessError:
        """Nothing to judge, only what went wrong to show (and the timeline, kept)."""
        events = timeline.events()
        if settings.report_dir is not None:
            write_artifacts(settings.report_dir, scenario.name, events)
        return HarnessError(
            _harness_report(scenario, settings, error, events, seconds, nodeid, info)
        )

    if "error" in box:  # the target raised: its traceback
        raise harness_error(str(box["error"]))
    broken = contract_events.violations(timeline.events())
    if broken:
        raise harness_error(
            f"target {info.name!r} broke the event contract:\n"
            + "\n".join(f"  {line}" for line in broken)
        )
    record = RunRecord(
        result=result if isinstance(result, JobResult) else None,
        events=timeline.events(),
        survivors=orphans,
        seconds=seconds,
        within=within,
        timed_out=timed_out,
        outcome=scenario.expect.outcome,
        error_pattern=scenario.expect.error,
        harness_error=_unwind_error(thread),
        oracle=info.oracle,
        time_scale=scale,
        faults=faults,
        timing=info.timing,
        job=job,
        error_aliases=info.error_aliases,
        within_slack=slack,
    )
    verdict = evaluate(record, invariants, named=scenario.expect.invariants)
    if settings.report_dir is not None:
        write_artifacts(settings.report_dir, scenario.name, record.events)
        write_verdict(
            settings.report_dir, scenario.name, verdict.lines(), _against(scenario, settings, info)
        )
    outcome = ScenarioOutcome(
        scenario,
        verdict,
        seconds,
        tuple(describe(f) for f in faults),
        record.result,
        tuple(record.events),
        tuple(describe(s) for s in delivered(faults, record.events)),
    )
    if verdict.failures:
        report = _report(scenario, settings, record, verdict, nodeid, info)
        raise ScenarioFailure(report, verdict, outcome)
    return outcome


def applicable_invariants(scenario: Scenario) -> tuple[str, ...]:
    """The scenario's invariants, or every one that applies to its outcome minus those
    its faults make meaningless (a stuck exit cannot exit promptly).  Whether the
    faults acted is judged either way: a scenario names what it checks of the runtime."""
    if scenario.expect.invariants:
        named = scenario.expect.invariants
        return named if FAULTS_DELIVERED in named else (*named, FAULTS_DELIVERED)
    voided = {name for f in scenario.faults for name in CATALOG[f.fault].voids}
    return tuple(n for n in default_invariants(scenario.expect.outcome) if n not in voided)


def _stop(abort: Abort, guard: ProcessGuard, thread: threading.Thread) -> None:
    """End a run from outside: abort it (the target's hooks run), then kill its processes,
    then let its thread unwind."""
    abort.set()
    guard.kill_all()
    thread.join(ABORT_GRACE)
    guard.kill_all()


def _cut_report(
    scenario: Scenario,
    settings: Settings,
    info: TargetInfo,
    timeline: Timeline,
    started: float,
    cut: Cut,
    nodeid: str | None,
) -> str:
    events = timeline.events()
    artifacts = (
        write_artifacts(settings.report_dir, scenario.name, events)
        if settings.report_dir is not None
        else None
    )
    return cut_report(
        scenario_name=scenario.name,
        scenario_path=str(scenario.path),
        line=scenario.line,
        description=scenario.description,
        message=cut.message(),
        artifacts=artifacts,
        events=events,
        reproduce=nodeid or f"{scenario.path}::{scenario.name}",
        against=_against(scenario, settings, info),
        seconds=time.monotonic() - started,
    )


def _unwind_error(thread: threading.Thread) -> str | None:
    if thread.is_alive():
        return f"the job did not unwind within {ABORT_GRACE:g}s of being aborted"
    return None


def _against(scenario: Scenario, settings: Settings, info: TargetInfo | None) -> Against:
    name = target_name(scenario, settings)
    return Against(
        target=name,
        known_bug=settings.known_bug,
        # the reproduce line names the target the scenario ran against, its own or the session's
        options=dataclasses.replace(settings, target=name).options(),
        version=info.version if info is not None else None,
    )


def _harness_report(
    scenario: Scenario,
    settings: Settings,
    error: str,
    events: list[Event] | tuple[Event, ...],
    seconds: float,
    nodeid: str | None,
    info: TargetInfo | None = None,
) -> str:
    return harness_error_report(
        scenario_name=scenario.name,
        scenario_path=str(scenario.path),
        line=scenario.line,
        error=error,
        events=events,
        reproduce=nodeid or f"{scenario.path}::{scenario.name}",
        against=_against(scenario, settings, info),
        seconds=seconds,
    )


def _report(
    scenario: Scenario,
    settings: Settings,
    record: RunRecord,
    verdict: Verdict,
    nodeid: str | None,
    info: TargetInfo,
) -> str:
    return failure_report(
        scenario_name=scenario.name,
        scenario_path=str(scenario.path),
        line=scenario.line,
        description=scenario.description,
        failures=[c.failure() for c in verdict.earliest_first()],
        events=record.events,
        reproduce=nodeid or f"{scenario.path}::{scenario.name}",
        against=_against(scenario, settings, info),
        seconds=record.seconds,
        not_applicable=[(c.name, c.seen) for c in verdict.not_applicable],
    )


def _scaled_job(job: JobConfig, scale: float) -> JobConfig:
    if scale == 1.0:
        return job
    return dataclasses.replace(job, timeouts=job.timeouts.scaled(scale))


def _scaled_fault(fault: FaultSpec, scale: float) -> FaultSpec:
    if scale == 1.0:
        return fault
    kinds = {p.name: p.kind for p in CATALOG[fault.fault].params.values()}
    params = {
        k: (v * scale if kinds.get(k) == "duration" and isinstance(v, float | int) else v)
        for k, v in fault.params.items()
    }
    return dataclasses.replace(fault, params=params)


__all__ = [
    "HarnessError",
    "ScenarioCut",
    "ScenarioFailure",
    "ScenarioOutcome",
    "ScenarioUnsupported",
    "applicable_invariants",
    "run_scenario",
    "target_name",
    "unsupported_reason",
]
