"""The reference target's fault code inside a training process.

Loaded only when a run's plan needs it: the plan names :data:`HOOK` in
:data:`reference_impl.agent.AGENT_HOOKS_ENV`, and the agent calls it once it is
built.  It registers the ``call(NAME)`` failpoint actions the faults use and wraps
the agent's seams; the correct agent knows nothing of either.  Importing it loads
the ``pytest_flrelia.targets`` packages but neither pytest nor the judge in that
process (``tests/test_reference_faults.py`` checks).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from pytest_flrelia.contract import failpoints

if TYPE_CHECKING:
    from reference_impl.agent import Agent

log = logging.getLogger(__name__)

HOOK = f"{__name__}:install"
"""What a plan puts in ``FLRELIA_AGENT_HOOKS``."""

BREAK_PIPE = "break_pipe"
LINGER_THREAD = "linger_thread"


def install(agent: Agent) -> None:
    """Register the actions ``call(break_pipe)`` and ``call(linger_thread)`` for ``agent``."""
    broken = BrokenPipe(agent)
    failpoints.register_action(BREAK_PIPE, broken.act)
    failpoints.register_action(LINGER_THREAD, linger_in_thread)


class BrokenPipe:
    """The pipe's socket dies under a process that keeps running and stays silent.

    A dead pipe makes the agent's handler report PEER_GONE, and a correct agent
    ends its process when its client is gone; this fault must leave the process
    running (the client has to notice on its own), so it wraps the agent's
    ``on_client_gone`` seam to ignore what it caused itself.
    """

    def __init__(self, agent: Agent) -> None:
        self._agent = agent
        self._broken = threading.Event()
        self._client_gone: Callable[[str], None] = agent.on_client_gone
        agent.on_client_gone = self._on_client_gone

    def act(self) -> None:
        log.warning("%s: failpoint broke the pipe; the process keeps running", self._agent.site)
        self._broken.set()
        self._agent.pipe.close()
        threading.Event().wait()

    def _on_client_gone(self, reason: str) -> None:
        if self._broken.is_set():
            log.info("%s: %s (the broken_pipe fault did it); staying", self._agent.site, reason)
            return
        self._client_gone(reason)


def linger_in_thread() -> None:
    """A non-daemon thread that never ends holds the process at exit."""
    lingering = threading.Thread(
        target=threading.Event().wait, name="lingering-user-thread", daemon=False
    )
    lingering.start()
    lingering.join()


__all__ = ["BREAK_PIPE", "HOOK", "LINGER_THREAD", "BrokenPipe", "install", "linger_in_thread"]
