"""The default training script: a deterministic "training" step on numpy arrays.

Run as ``python -m reference_impl.train_script`` by the subprocess launcher.
:func:`local_update` and :func:`site_weight` are pure, so a test can compute
the expected global model independently.

``FLRELIA_SCRIPT_BEHAVIOUR`` (comma-separated) makes the script misbehave the
way real user code does: ``ignore_sigterm`` (a handler that swallows SIGTERM)
and ``spawn_child`` (a worker child that inherits stdout and lingers, like a
data loader).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping

from reference_impl import client_api as flare
from reference_impl.agent import SITE_ENV
from reference_impl.messages import VALIDATE, Array, Result
from reference_impl.timeline import EventKind, Timeline
from reference_impl.watchdog import group_dies_with_client

BEHAVIOUR_ENV = "FLRELIA_SCRIPT_BEHAVIOUR"
IGNORE_SIGTERM = "ignore_sigterm"
SPAWN_CHILD = "spawn_child"


def site_number(site: str) -> int:
    return int(site.rsplit("-", 1)[-1])


def local_update(model: Mapping[str, Array], site: str, round: int) -> dict[str, Array]:
    """Halve the model and add a site- and round-specific offset."""
    offset = site_number(site) * round
    return {name: (array * 0.5 + offset).astype(array.dtype) for name, array in model.items()}


def site_weight(site: str) -> float:
    """The number of samples the site claims: its aggregation weight."""
    return float(10 * site_number(site))


def _apply_behaviours(behaviours: set[str]) -> subprocess.Popen[bytes] | None:
    if IGNORE_SIGTERM in behaviours:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if SPAWN_CHILD in behaviours:
        return subprocess.Popen(
            [sys.executable, "-c", "import signal, time\nwhile True: signal.pause()"],
            stdout=sys.stdout,
            stderr=sys.stderr,
        )
    return None


def main() -> None:
    with group_dies_with_client():
        _train()


def _train() -> None:
    behaviours = {b for b in os.environ.get(BEHAVIOUR_ENV, "").split(",") if b}
    if behaviours:  # misbehaving on purpose: say so in the timeline
        site = os.environ.get(SITE_ENV)
        timeline = Timeline.from_environment(f"train-{site}")
        for behaviour in sorted(behaviours):
            timeline.record(EventKind.FAULT, site=site, behaviour=behaviour)
        timeline.close()
    child = _apply_behaviours(behaviours)
    if child is not None:
        print(f"started worker child {child.pid}", flush=True)
    flare.init()
    while flare.is_running():
        task = flare.receive()
        if task is None:
            break
        if task.kind == VALIDATE:
            flare.send(Result(metrics={"round": float(task.round)}))
            continue
        update = local_update(task.model, task.site, task.round)
        flare.send(Result(tensors=update, weight=site_weight(task.site)))


if __name__ == "__main__":
    main()
