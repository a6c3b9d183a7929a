"""Install the ``mini`` target the way a user installs one: a distribution with a
``flrelia.targets`` entry point, plus the directory holding :mod:`minilaunch`."""

from __future__ import annotations

import os
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
ENTRY_POINT = "mini = minilaunch:MiniTarget"


def install_mini(path: Path) -> str:
    """A ``minilaunch`` dist-info under ``path``; returns the PYTHONPATH that finds it."""
    info = path / "minilaunch-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: minilaunch\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[flrelia.targets]\n{ENTRY_POINT}\n")
    return os.pathsep.join([str(path), str(TESTS), str(ROOT), os.environ.get("PYTHONPATH", "")])
