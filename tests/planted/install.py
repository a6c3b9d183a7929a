"""Install ``planted`` as a ``flrelia.targets`` entry point, as a user installs a target,
so that worker processes and ``python -m pytest_flrelia.explore --target=planted`` find it."""

from __future__ import annotations

import os
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
ROOT = TESTS.parent
ENTRY_POINT = "planted = planted.target:PlantedTarget"


def install_planted(path: Path) -> str:
    """A ``planted`` dist-info under ``path``; returns the ``PYTHONPATH`` that finds it."""
    info = path / "planted-1.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: planted\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[flrelia.targets]\n{ENTRY_POINT}\n")
    return os.pathsep.join(
        p for p in (str(path), str(TESTS), str(ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
