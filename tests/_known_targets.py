"""What the known-issue and known-race plugin tests share: the real KB12 failure (a stop
that signals the child only, ``--flrelia-known-bug=child-only-sigterm``) in one round,
and an inner session that imports this checkout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STUBBORN = """\
name: stubborn-one-round
job:
  sites: 1
  rounds: 1
  tensors: {count: 1, size: 16KiB}
  timeouts: {download_complete: 500ms, download_connect: 200ms, stop_wait: 500ms, stop_grace: 200ms}
faults:
  - {fault: stuck_exit}
  - {fault: ignore_sigterm}
"""
BOTH_MODES = "matrix:\n  launch_once: [false, true]\n"
EXPECT = "expect: {outcome: success, within: 20s}\n"


def stubborn_scenario(*, both_modes: bool) -> str:
    """The scenario file's text: one item, or one per ``launch_once`` mode."""
    return STUBBORN + (BOTH_MODES if both_modes else "") + EXPECT


def import_this_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    """The inner session's conftest imports the package from this checkout."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))


__all__ = ["ROOT", "import_this_checkout", "stubborn_scenario"]
