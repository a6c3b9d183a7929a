"""Joining a component's threads with one shared bound."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable


def join_all(
    threads: Iterable[threading.Thread], timeout: float, owner: str, logger: logging.Logger
) -> list[threading.Thread]:
    """Join ``threads`` within ``timeout`` seconds in all, skipping the calling thread
    (a component may be stopped from one of its own threads); log and return the
    ones still alive."""
    deadline = time.monotonic() + timeout
    current = threading.current_thread()
    stuck = []
    for thread in threads:
        if thread is current:
            continue
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            logger.warning("%s: thread %s did not end within %.1f s", owner, thread.name, timeout)
            stuck.append(thread)
    return stuck
