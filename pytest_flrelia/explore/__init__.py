"""Exploration: generated fault schedules against a target, shrunk when one fails.

``explore(...)`` (Python), ``python -m pytest_flrelia.explore`` (command line) and
``pytest --flrelia-explore=N`` (the plugin) all draw schedules the same way: from a
Hypothesis strategy built from what the target declares (:mod:`.strategy`), rendered
as scenario YAML and loaded by the scenario loader (:mod:`.render`), run by the
harness, and, when one fails, shrunk by Hypothesis to the smallest schedule that still
fails with the same leading check (:mod:`.driver`).  docs/explore.md is the guide.
"""

from __future__ import annotations

from pytest_flrelia.explore.api import explore
from pytest_flrelia.explore.report import (
    ExploreReport,
    ScheduleResult,
    ScheduleVerdict,
    schedule_id,
)

__all__ = ["ExploreReport", "ScheduleResult", "ScheduleVerdict", "explore", "schedule_id"]
