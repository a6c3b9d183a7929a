"""The fault seam: registrations run, points strike in order, a failing action is recorded."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_flrelia.contract.events import violations
from pytest_flrelia.contract.faults import FaultSpec
from pytest_flrelia.contract.job import JobConfig
from pytest_flrelia.contract.timeline import EventKind, Timeline
from pytest_flrelia.targets.nvflare import points


def _child(faults: tuple[FaultSpec, ...] = ()) -> points.ChildContext:
    return points.ChildContext(site="site-1", launched_for=2, faults=faults, timeline=Timeline())


def test_actions_strike_at_their_point_and_a_failing_one_is_an_error_event() -> None:
    spec = FaultSpec("crash", "site-1", 2, {"at": "after_task_received"}, line=1, index=3)
    ctx = _child((spec,))
    seen: list[str] = []

    def boom(c: points.ChildContext) -> None:
        raise RuntimeError("boom")

    ctx.at("after_task_received", lambda c: seen.append("a"))
    ctx.at("after_task_received", boom)
    ctx.at("after_task_received", lambda c: (seen.append("b"), c.fault(spec, "noted"))[0])
    ctx.strike("before_init")
    assert seen == []
    ctx.strike("after_task_received")
    assert seen == ["a", "b"]
    kinds = [e.kind for e in ctx.timeline.events()]
    assert kinds == [EventKind.ERROR, EventKind.FAULT]
    fault = ctx.timeline.events(EventKind.FAULT)[0]
    assert (fault.process, fault.round, fault.detail["fault_id"]) == ("train-site-1", 2, 3)
    assert violations(ctx.timeline.events()) == []
    assert ctx.active("crash") == [spec]
    ctx.round = 3
    assert ctx.active("crash") == []
    with pytest.raises(ValueError, match="unknown at: point"):
        ctx.at("nowhere", lambda c: None)


def test_boot_registrations_get_the_context_and_module_strike_reaches_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(points, "_child_boot", [])
    monkeypatch.setattr(points, "_child", None)
    booted: list[points.ChildContext] = []
    struck: list[int] = []

    @points.on_child_boot
    def register(ctx: points.ChildContext) -> None:
        booted.append(ctx)
        ctx.at("after_download", lambda c: struck.append(c.round))

    points.strike("after_download")  # no child yet: nothing happens
    ctx = _child()
    points.boot_child(ctx)
    points.strike("after_download")
    assert booted == [ctx] and struck == [2] and points.child_context() is ctx


def test_parent_context_records_in_client_and_server_lanes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(points, "_parent_start", [])
    spec = FaultSpec("slow_aggregation", None, None, {}, line=1, index=0)
    ctx = points.ParentContext(
        job=JobConfig(), faults=(spec,), sites={}, server_cell=None, timeline=Timeline()
    )
    heard: list[EventKind] = []
    ctx.subscribe(lambda e: heard.append(e.kind))
    points.on_parent_start(lambda c: c.fault(spec, "slept", round=1))
    points.start_parent(ctx)
    ctx.record(EventKind.TASK_SENT, site="site-1", round=1)
    lanes = [e.process for e in ctx.timeline.events()]
    assert lanes == ["server", "client-site-1"] and heard == [EventKind.FAULT, EventKind.TASK_SENT]
    assert ctx.specs("slow_aggregation") == [spec]


def test_a_missing_fault_module_is_none_but_a_broken_one_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert points.load_fault_module("pytest_flrelia.targets.nvflare.no_such_faults") is None
    (tmp_path / "broken_faults_mod.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError):
        points.load_fault_module("broken_faults_mod")
