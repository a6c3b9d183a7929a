"""Plug-in targets installed the way a user installs one: a distribution with an entry point."""

from __future__ import annotations

from pathlib import Path

RAISING_TARGET = """\
from pytest_flrelia.contract.target import TargetInfo
from pytest_flrelia.contract.timeline import EventKind


class RaisingTarget:
    name = "raising"
    info = TargetInfo(name="raising", faults={}, events=frozenset(EventKind))

    def run(self, job, faults, context):
        executors = {}
        return self._site_executor(executors, "site-1")

    def _site_executor(self, executors, site):
        return executors[site]
"""
"""A target whose run raises deep inside itself, as a plug-in with a bug does."""


def install_target(path: Path, name: str, module: str, source: str) -> None:
    """An installed distribution (a ``*.dist-info`` on ``sys.path``) with a
    ``flrelia.targets`` entry point ``name`` -> ``module:RaisingTarget``."""
    (path / f"{module}.py").write_text(source)
    info = path / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        f"[flrelia.targets]\n{name} = {module}:RaisingTarget\n"
    )
