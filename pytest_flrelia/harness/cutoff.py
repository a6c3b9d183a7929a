"""pytest-timeout's deadline, honoured by a scenario run instead of ``os._exit``.

pytest-timeout's thread method dumps the stacks and calls ``os._exit(1)``: a
scenario running then writes no report, kills none of its processes (their
watchdogs do, later) and leaves its job directory behind.  Its signal method
raises wherever the main thread is.  For an item that runs scenarios the
plugin takes the timer through pytest-timeout's own hook
(``pytest_timeout_set_timer``): at the deadline a :class:`Cut` fires, the run
in progress ends the way a run past its bound does (abort, kill, report, clean
up) and the item fails with pytest-timeout's message.  pytest-timeout's own
method is still armed, :data:`CUT_GRACE` later, for a test that hangs where no
run listens.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

CUT_GRACE = 30.0
"""After the cut: how long the run may take to unwind and report before pytest-timeout's
own method (the user's ``--timeout-method``) fires after all."""
TIMEOUT_MESSAGE = "Timeout (>{timeout}s) from pytest-timeout."
"""pytest-timeout's own failure text, so a search for it still finds a cut scenario."""

CUT_KEY = pytest.StashKey["Cut"]()
"""The item's :class:`Cut`, while pytest-timeout's timer is set for it."""


class Cut:
    """One item's deadline: fired once by its timer; a run listens while it waits."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._lock = threading.Lock()
        self._fired = False
        self._listeners: list[Callable[[], None]] = []

    @property
    def fired(self) -> bool:
        with self._lock:
            return self._fired

    def message(self) -> str:
        return TIMEOUT_MESSAGE.format(timeout=self.timeout)

    def fire(self) -> None:
        with self._lock:
            self._fired = True
            listeners = list(self._listeners)
        for listener in listeners:
            listener()

    @contextmanager
    def listening(self, listener: Callable[[], None]) -> Iterator[None]:
        """Call ``listener`` when the cut fires (at once if it has already)."""
        with self._lock:
            self._listeners.append(listener)
            fired = self._fired
        if fired:
            listener()
        try:
            yield
        finally:
            with self._lock:
                self._listeners.remove(listener)


def set_timer(item: pytest.Item, settings: Any, others: Callable[..., object]) -> bool:
    """Arm a :class:`Cut` for ``item`` at ``settings.timeout``, and pytest-timeout's own
    method (``others``: the hook without this plugin) :data:`CUT_GRACE` later."""
    cut = Cut(float(settings.timeout))
    item.stash[CUT_KEY] = cut
    timer = threading.Timer(cut.timeout, cut.fire)
    timer.name = f"flrelia-cut {item.nodeid}"
    timer.daemon = True
    others(item=item, settings=settings._replace(timeout=cut.timeout + CUT_GRACE))
    backstop: Callable[[], None] | None = getattr(item, "cancel_timeout", None)

    def cancel() -> None:
        timer.cancel()
        timer.join()
        if backstop is not None:
            backstop()
        if CUT_KEY in item.stash:  # pytest-timeout may cancel twice (protocol and call)
            del item.stash[CUT_KEY]

    item.cancel_timeout = cancel  # type: ignore[attr-defined]  # pytest-timeout's protocol
    timer.start()
    return True


__all__ = ["CUT_GRACE", "CUT_KEY", "Cut", "set_timer"]
