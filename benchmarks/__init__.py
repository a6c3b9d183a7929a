"""Benchmarks of pytest-flrelia: ``python benchmarks/run.py [--quick]``.

Each module measures one group of figures and returns :class:`~benchmarks.figure.Figure`
records; :mod:`benchmarks.run` prints them.  ``docs/performance.md`` explains each figure.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
"""The checkout: scenario files and the packages the subprocesses import live here."""
