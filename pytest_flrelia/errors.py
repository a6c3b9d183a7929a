"""Every exception and warning the plugin raises, in one module.

Why one home: a user catching a plugin error (``flrelia.run()`` raising
:class:`ScenarioFailure`, a loader refusing a file with :class:`ScenarioError`)
should not have to know which layer raised it, and no layer should import
another one only to name its exception.  This module imports the standard
library, pytest (for :class:`ScenarioTimeoutWarning`) and nothing of the
plugin at runtime; the types it annotates with are imported for the type
checker only (``tests/test_dependency_rules.py`` holds it to that).

Contract-level errors stay in :mod:`pytest_flrelia.contract`, which imports
nothing outside itself: :class:`~pytest_flrelia.contract.units.UnitError`,
:class:`~pytest_flrelia.contract.timeout_checks.TimeoutConflictWarning`,
:class:`~pytest_flrelia.contract.failpoints.FailpointSyntaxError`.  The old
import paths (``pytest_flrelia.scenario.loader.ScenarioError``,
``pytest_flrelia.harness.runner.ScenarioFailure``,
``pytest_flrelia.plugin.fixture.RunSpecError``, ...) re-export these names.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pytest_flrelia.harness.runner import ScenarioOutcome
    from pytest_flrelia.judge.invariants import Verdict


# --- scenario files -----------------------------------------------------------------


class ScenarioError(Exception):
    """A scenario file that cannot be used, said the way a compiler would.

    ``str()`` is one line: ``file:line: key.path: message; valid: a, b; did you
    mean 'a'?``.
    """

    def __init__(
        self,
        path: Path,
        line: int | None,
        key_path: str,
        message: str,
        valid: Sequence[str] = (),
        suggestion: str | None = None,
        *,
        column: int | None = None,
        excerpt: str | None = None,
    ) -> None:
        self.path = path
        self.line = line
        self.key_path = key_path
        self.message = message
        self.valid = tuple(valid)
        self.suggestion = suggestion
        self.column = column
        """1-based, when the error is at a character (a YAML syntax error)."""
        self.excerpt = excerpt
        """The offending source lines with a caret under the spot, shown below the message."""
        super().__init__(path, line, key_path, message, self.valid, suggestion)

    def format(self, path_text: str | None = None) -> str:
        """The message with the file shown as ``path_text`` (e.g. relative to rootdir)."""
        where = path_text if path_text is not None else str(self.path)
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        text = (
            f"{where}: {self.key_path}: {self.message}"
            if self.key_path
            else (f"{where}: {self.message}")
        )
        if self.valid:
            text += f"; valid: {', '.join(self.valid)}"
        if self.suggestion:
            text += f"; did you mean '{self.suggestion}'?"
        if self.excerpt:
            text += "\n" + self.excerpt
        return text

    def __str__(self) -> str:
        return self.format()


class ScenarioTimeoutWarning(pytest.PytestWarning):
    """A scenario file sets two timeouts that contradict each other; the text names
    ``file:line``, the key and both values (the rules:
    :mod:`pytest_flrelia.contract.timeout_checks`)."""

    def __init__(self, text: str, located: ScenarioError | None = None) -> None:
        super().__init__(text)
        self.located = located
        """Where and what, as a :class:`ScenarioError` would say it (never raised)."""


class ParamError(ValueError):
    """A fault entry that does not fit its declaration; ``key`` is the offending key."""

    def __init__(
        self,
        key: str,
        reason: str,
        valid: Sequence[str] = (),
        suggestion: str | None = None,
    ) -> None:
        self.key = key
        self.reason = reason
        self.valid = tuple(valid)
        self.suggestion = suggestion
        super().__init__(f"{key}: {reason}")


# --- running a scenario -------------------------------------------------------------


class ScenarioFailure(Exception):
    """A scenario did not hold; ``report`` is the text pytest shows."""

    def __init__(
        self,
        report: str,
        verdict: Verdict | None = None,
        outcome: ScenarioOutcome | None = None,
    ) -> None:
        super().__init__(report)
        self.report = report
        self.verdict = verdict
        self.outcome = outcome
        """The failed run itself: its job result and timeline, for the Python API."""


class ScenarioCut(ScenarioFailure):
    """pytest-timeout's deadline passed mid-run: the run was ended cleanly and reported."""


class HarnessError(ScenarioFailure):
    """The harness or the target raised: ``report`` carries the whole traceback, and no
    verdict was reached (a crash proves nothing about the system under test)."""


class ScenarioUnsupported(Exception):
    """The target cannot run the scenario (a fault, scope, ``at:`` point, event kind or
    variant it does not declare): nothing ran and nothing is judged.  A skip, never a pass."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RunSpecError(ValueError):
    """A ``flrelia.run()`` keyword (or a marker default) the scenario loader refused."""


# --- finding the target -------------------------------------------------------------


class UnknownTargetError(LookupError):
    """No built-in target and no ``flrelia.targets`` entry point has this name."""


class TargetUnavailableError(RuntimeError):
    """A plugged-in target cannot run here: what it needs is missing or unsupported (the
    nvflare target without NVFlare, or with a version outside its range); the message says
    what to install."""


class TargetRunnerError(RuntimeError):
    """An out-of-process target's runner ended without a result while nobody aborted it:
    a defect of the target (a harness error), with the runner's last log lines."""


__all__ = [
    "HarnessError",
    "ParamError",
    "RunSpecError",
    "ScenarioCut",
    "ScenarioError",
    "ScenarioFailure",
    "ScenarioTimeoutWarning",
    "ScenarioUnsupported",
    "TargetRunnerError",
    "TargetUnavailableError",
    "UnknownTargetError",
]
