"""One schedule, drawn, run, rerun and shrunk by Hypothesis.

Why Hypothesis can draw schedule ``i`` of seed ``s`` (measured with hypothesis 6.170):
with ``@seed(x)`` and ``database=None`` the examples of a ``@given`` run are a function of
``x``, but the first one is always the minimal draw (all choices zero), the same for every
seed.  The body therefore rejects that schedule with ``assume(False)``, on its first call
and whenever a shrink draws it again (Hypothesis then draws the next example, at random
from the seed), and runs the second: ``max_examples=1``
counts valid examples only, so that one is the schedule of the item, a pure function of
``(s, i)``.  ``tests/explore/test_draw.py`` checks both halves: the same schedule on every
draw of one ``(s, i)``, and different schedules across ``i``.

Shrinking is Hypothesis's own: when the drawn schedule fails, and fails again with the
same leading check on a rerun (otherwise it is *flaky*, and not shrunk), the body raises
:class:`ScenarioFailure`; from then on it raises only for a candidate that fails with that
same leading check, so the shrinker ends on the smallest schedule that still does.
Every outcome is cached by the rendered schedule, so the shrinker's repeats and its
final replay cost nothing; once the budget is spent an unseen candidate counts as
passing (it is not run), which ends the shrink on the best schedule found so far.

Hypothesis's shrinker is made for cheap calls: each candidate here is a real job of a
few seconds, so its 60 s get it 10-20 candidates, and it spends them on the job's
shape before it reaches the faults (measured: 3 and 4 faults left where 1 fails).
The last :data:`DELETION_SECONDS` therefore go to a pass of our own over Hypothesis's
minimal schedule: delete each fault in turn (never the fatal one a failure needs) and
keep a deletion whose run still fails with the same leading check.  Deleting a benign
fault keeps the expectation true (success stays success) and the bound loose.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from hypothesis import HealthCheck, Phase, Verbosity, assume, given, settings
from hypothesis import seed as hypothesis_seed

from pytest_flrelia.contract.target import Target, TargetInfo
from pytest_flrelia.errors import ScenarioError, ScenarioFailure
from pytest_flrelia.explore.report import ScheduleResult, schedule_id
from pytest_flrelia.explore.run import RunResult, render, run_schedule
from pytest_flrelia.explore.strategy import Schedule, focus_of, schedules
from pytest_flrelia.harness.settings import Settings

MAX_SHRINK_RUNS = 80
"""A shrink runs at most this many candidates (each is a real run), budget permitting."""
MAX_SHRINK_SECONDS = 60.0
"""And for at most this long: one item stays well inside pytest-timeout's 120 s."""
DELETION_SECONDS = 25.0
"""Of that, the last part is kept for deleting faults one at a time (see the module doc)."""
CONFIRMATIONS = 2
"""How many of the smallest kept schedules are run again before falling back to the
drawn one (each confirmation is one more real run, after the shrink's budget)."""


@dataclass(frozen=True)
class Failing:
    """A schedule that failed with the drawn one's leading check."""

    schedule: Schedule
    result: RunResult


def _fail(state: _State, schedule: Schedule, result: RunResult) -> None:
    """The one place the body raises: Hypothesis tells failures apart by where they were
    raised, and every one of ours is the same failure (the same leading check).  The last
    one raised is Hypothesis's final replay of the minimal example."""
    state.raised = Failing(schedule, result)
    state.accepted.append(state.raised)
    raise ScenarioFailure(result.report)


def item_seed(seed: int, index: int) -> int:
    """The Hypothesis seed of schedule ``index`` of session ``seed`` (stable everywhere)."""
    digest = hashlib.blake2b(f"flrelia-explore:{seed}:{index}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big")


@dataclass
class _State:
    calls: int = 0
    drawn: Schedule | None = None
    first: RunResult | None = None
    flaky: RunResult | None = None
    check: str | None = None
    runs: int = 0
    shrink_runs: int = 0
    raised: Failing | None = None
    found: float = 0.0
    """When the drawn schedule's failure was confirmed (``time.monotonic()``)."""
    cache: dict[str, RunResult] = field(default_factory=dict)
    accepted: list[Failing] = field(default_factory=list)
    """Every schedule the shrink kept, in order: the drawn one first, the minimal last."""


def draw_schedule(info: TargetInfo, seed: int, index: int) -> Schedule:
    """Schedule ``index`` of ``seed`` without running it (replay, tests, docs)."""
    box: list[Schedule] = []

    def keep(schedule: Schedule) -> None:
        box.append(schedule)

    _given(info, seed, index, keep)()
    return box[-1]


def _given(
    info: TargetInfo,
    seed: int,
    index: int,
    body: Callable[[Schedule], None],
    *,
    shrink: bool = False,
) -> Callable[[], None]:
    minimal: list[Schedule] = []

    @hypothesis_seed(item_seed(seed, index))
    @settings(
        database=None,
        max_examples=1,
        deadline=None,
        derandomize=False,
        phases=(Phase.generate, Phase.shrink) if shrink else (Phase.generate,),
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
        print_blob=False,
        verbosity=Verbosity.quiet,
    )
    @given(schedules(info, focus=focus_of(info, index)))
    def run(schedule: Schedule) -> None:
        if not minimal:
            minimal.append(schedule)
        # The minimal draw, the same for every seed (see the module doc), is rejected by
        # what it is, not by being first: a shrink that reaches it again must get the same
        # verdict, or Hypothesis raises FlakyReplay (seen with every candidate failing).
        assume(schedule.mapping != minimal[0].mapping)
        body(schedule)

    return run


def explore_one(
    info: TargetInfo,
    run_settings: Settings,
    seed: int,
    index: int,
    *,
    deadline: float,
    out_dir: Path | None,
    targets: Callable[[str], Target] | None = None,
) -> ScheduleResult:
    """Draw schedule ``index`` of ``seed``, run it, and shrink it if it fails; the
    minimal failing scenario goes to ``out_dir``.  ``deadline`` (``time.monotonic()``)
    ends the shrink, never the drawn schedule's own run."""
    started = time.monotonic()
    state = _State()
    shrink_until = min(deadline, started + MAX_SHRINK_SECONDS)
    hypothesis_until = shrink_until - DELETION_SECONDS

    def attempt(schedule: Schedule) -> RunResult:
        state.runs += 1
        return run_schedule(
            schedule.named(schedule_name(run_settings, seed, index)), run_settings, targets
        )

    def body(schedule: Schedule) -> None:
        key = render(schedule.mapping)
        if state.drawn is None:  # the item's own schedule
            state.drawn = schedule
            result = attempt(schedule)
            state.first = result
            if result.ok:
                return
            again = attempt(schedule)
            if again.leading_check != result.leading_check:
                state.flaky = again
                return
            state.check = result.leading_check
            state.found = time.monotonic()
            state.cache[key] = result
            _fail(state, schedule, result)
        result_or_none = state.cache.get(key)
        if result_or_none is None:
            if time.monotonic() >= hypothesis_until or state.shrink_runs >= MAX_SHRINK_RUNS:
                return  # budget spent: an unseen candidate counts as passing
            state.shrink_runs += 1
            result_or_none = attempt(schedule)
            state.cache[key] = result_or_none
        if result_or_none.leading_check == state.check:
            _fail(state, schedule, result_or_none)

    minimal: Failing | None = None
    try:
        _given(info, seed, index, body, shrink=True)()
    except ScenarioFailure:
        minimal = state.raised
    if minimal is not None:
        before = state.shrink_runs

        def still_fails(candidate: Schedule) -> RunResult | None:
            key = render(candidate.mapping)
            result = state.cache.get(key)
            if result is None:
                if time.monotonic() >= shrink_until or state.shrink_runs >= MAX_SHRINK_RUNS:
                    return None
                state.shrink_runs += 1
                try:
                    result = attempt(candidate)
                except ScenarioError:  # not a schedule the language holds: not kept
                    return None
                state.cache[key] = result
            if result.leading_check != state.check:
                return None
            state.accepted.append(Failing(candidate, result))
            return result

        delete_faults(minimal, still_fails)
        deletion_runs = state.shrink_runs - before
        minimal, confirmation = _confirmed(state, attempt)
    drawn = state.drawn
    assert drawn is not None and state.first is not None
    seconds = time.monotonic() - started
    base = ScheduleResult(seed, index, "ok", seconds=seconds, runs=state.runs, faults=drawn.faults)
    if state.flaky is not None:
        return replace(
            base,
            verdict="flaky",
            leading_check=state.first.leading_check,
            detail=f"failed with {state.first.leading_check}, then "
            + (f"with {state.flaky.leading_check}" if state.flaky.leading_check else "held"),
            report=state.first.report,
        )
    if minimal is None:
        return base
    text = finding_text(minimal, run_settings, seed, index, info)
    path = None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{schedule_name(run_settings, seed, index)}.scenario.yaml"
        path.write_text(text, encoding="utf-8")
    return replace(
        base,
        verdict="failed",
        leading_check=state.check,
        scenario_path=path,
        seconds=time.monotonic() - started,
        shrunk_faults=minimal.schedule.faults,
        shrink_seconds=time.monotonic() - state.found,
        detail=f"shrunk in {state.shrink_runs} runs ({deletion_runs} deleting faults); "
        + confirmation,
        report=state.first.report,
        scenario=text,
    )


def _confirmed(state: _State, attempt: Callable[[Schedule], RunResult]) -> tuple[Failing, str]:
    """The smallest kept schedule that fails with the leading check once more, and how it
    was confirmed.  A shrink candidate is run once, and a timing-dependent bug can fail
    a candidate by chance (seen: KB7's minimal file passed when run again), so the
    minimal is run again; if it holds, the one kept before it, up to
    :data:`CONFIRMATIONS` runs; then the drawn schedule, which failed twice already."""
    drawn = state.accepted[0]
    drawn_key = render(drawn.schedule.mapping)
    seen: set[str] = set()
    tried = 0
    for failing in reversed(state.accepted):
        key = render(failing.schedule.mapping)
        if key in seen:
            continue
        seen.add(key)
        if key == drawn_key:
            return drawn, "the drawn schedule (it failed twice)"
        if tried == CONFIRMATIONS:
            break
        tried += 1
        if attempt(failing.schedule).leading_check == state.check:
            return failing, "the minimal failed again" if tried == 1 else (
                f"confirmed after {tried - 1} smaller one(s) held on a second run"
            )
    return drawn, f"none of the {tried} smallest failed again: the drawn schedule (it failed twice)"


def without_fault(schedule: Schedule, position: int) -> Schedule | None:
    """``schedule`` without its fault at ``position``; ``None`` for the fatal fault a
    failing expectation stands on (the last one)."""
    faults = list(schedule.mapping.get("faults", ()))
    if schedule.mapping["expect"]["outcome"] == "failure" and position == len(faults) - 1:
        return None
    del faults[position]
    mapping = dict(schedule.mapping)  # the keys keep their order
    if faults:
        mapping["faults"] = faults
    else:
        del mapping["faults"]
    return Schedule(mapping, len(faults))


def delete_faults(
    failing: Failing, still_fails: Callable[[Schedule], RunResult | None]
) -> Failing:
    """Delete ``failing``'s faults one at a time, first to last, keeping each deletion
    that ``still_fails`` (its run, or ``None``: it passed, failed otherwise, or the
    budget is spent)."""
    current = failing
    position = 0
    while position < current.schedule.faults:
        candidate = without_fault(current.schedule, position)
        result = None if candidate is None else still_fails(candidate)
        if result is None:
            position += 1
        else:
            assert candidate is not None  # a result comes only from a candidate
            current = Failing(candidate, result)  # the next fault moved to ``position``
    return current


def schedule_name(run_settings: Settings, seed: int, index: int) -> str:
    """``explore-<variant or correct>-s<seed>-<index>``: a valid, unique scenario name."""
    variant = run_settings.known_bug or "correct"
    return f"explore-{variant}-{schedule_id(seed, index)}".lower()


def finding_text(
    failure: Failing, run_settings: Settings, seed: int, index: int, info: TargetInfo
) -> str:
    """The minimal failing schedule as a scenario file, with a header naming how it was
    found (seed, target, variant, leading check) and how to replay it."""
    name = schedule_name(run_settings, seed, index)
    variant = run_settings.known_bug
    header = "\n".join(
        (
            f"Found by pytest-flrelia exploration: seed {seed}, schedule {index} "
            f"(item explore[{schedule_id(seed, index)}]).",
            f"target: {info.name}; variant: {variant or 'none (the correct runtime)'}; "
            f"leading check: {failure.result.leading_check}.",
            "Shrunk by Hypothesis, then fault by fault, to the smallest schedule failing "
            "with that check.",
            f"Replay the search: pytest --flrelia-explore={index + 1} "
            f"--flrelia-explore-seed={seed} -k '{schedule_id(seed, index)}'"
            + (f" --flrelia-known-bug={variant}" if variant else ""),
            "Keep it: copy this file under scenarios/ (add `catches:` for a known bug).",
        )
    )
    description = (
        f"explored schedule {schedule_id(seed, index)}, minimal failing "
        f"{failure.result.leading_check}"
    )
    return render(failure.schedule.named(name, description), header)


__all__ = [
    "Failing",
    "delete_faults",
    "draw_schedule",
    "explore_one",
    "finding_text",
    "item_seed",
    "schedule_name",
    "without_fault",
]
