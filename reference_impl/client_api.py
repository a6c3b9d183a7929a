"""The API a training script calls: ``init()``, ``receive()``, ``send()``, ``is_running()``.

A training script is one process with one agent, so the agent is module
state here (and only here); :func:`init` builds it from the environment the
launcher set.  Tests build an :class:`~reference_impl.agent.Agent` directly.
"""

from __future__ import annotations

import atexit

from pytest_flrelia.contract import seams
from pytest_flrelia.contract.seams import ExitFn
from reference_impl.agent import Agent
from reference_impl.messages import Result, Task

__all__ = ["Result", "Task", "init", "is_running", "receive", "send", "site"]

_agent: Agent | None = None


def init(*, exit_fn: ExitFn = seams.exit_process) -> None:
    """Connect to the client.  With one process for all rounds, end the process
    through the exit seam when the script returns (after saying goodbye)."""
    global _agent
    if _agent is not None:
        return
    _agent = Agent.from_environment(exit_fn=exit_fn)
    _agent.init()
    if _agent.settings.launch_once:
        atexit.register(_agent.exit, 0)


def receive(timeout: float | None = None) -> Task | None:
    """The next task; ``None`` when the job is over."""
    return _require().receive(timeout)


def send(result: Result) -> None:
    """Return the result; blocks until the server downloaded its tensors."""
    _require().send(result)


def is_running() -> bool:
    return _agent is not None and _agent.is_running()


def site() -> str:
    return _require().site


def _require() -> Agent:
    if _agent is None:
        raise RuntimeError("call reference_impl.client_api.init() first")
    return _agent
