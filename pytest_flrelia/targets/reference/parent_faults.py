"""The reference target's fault code on the client side, installed per run by a plan.

The correct :class:`~reference_impl.task_exchanger.TaskExchanger` forgets a handler
it retires; a stale-event fault needs the old handler back, so the plan installs
:class:`RetiredHandlers` through the exchanger's ``on_retire`` seam, only when it
plans such a fault.
"""

from __future__ import annotations

import threading

from reference_impl.executor import LauncherExecutor
from reference_impl.pipe_handler import PipeHandler


class RetiredHandlers:
    """Every handler the watched exchangers retired, by site, oldest first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_site: dict[str, list[PipeHandler]] = {}

    def watch(self, executor: LauncherExecutor) -> None:
        site = executor.site
        with self._lock:
            self._by_site.setdefault(site, [])
        executor.exchanger.on_retire(lambda handler: self._add(site, handler))

    def latest(self, site: str, round: int) -> PipeHandler | None:
        """The newest retired handler of ``site`` that served ``round``."""
        with self._lock:
            served = [h for h in self._by_site.get(site, []) if h.round == round]
        return served[-1] if served else None

    def _add(self, site: str, handler: PipeHandler) -> None:
        with self._lock:
            self._by_site.setdefault(site, []).append(handler)


__all__ = ["RetiredHandlers"]
