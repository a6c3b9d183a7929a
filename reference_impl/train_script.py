"""The default training script: a deterministic "training" step on numpy arrays.

Run as ``python -m reference_impl.train_script`` by the subprocess launcher.
:func:`local_update` and :func:`site_weight` are pure, so a test can compute
the expected global model independently.

``FLRELIA_SCRIPT_BEHAVIOUR`` (comma-separated) makes the script misbehave the
way real user code does: ``ignore_sigterm`` (a handler that swallows SIGTERM)
and ``spawn_child`` (a worker child that inherits stdout and lingers, like a
data loader).  An item may be scoped and tagged, ``ignore_sigterm[site=site-2,
round=2]@ignore_sigterm#1`` (round: the one the process was launched for), and
records a ``fault`` event when it acts: the child started, a SIGTERM swallowed.
Items are parsed by :func:`pytest_flrelia.contract.failpoints.parse_points`, the
failpoints' own left-side parser: a malformed or unknown item ends the process
with the error, it is never dropped.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import zlib
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any

from pytest_flrelia.contract import failpoints
from pytest_flrelia.contract.events import training_lane
from pytest_flrelia.contract.failpoints import Point
from pytest_flrelia.contract.timeline import EventKind, Timeline
from reference_impl import client_api as flare
from reference_impl.agent import LAUNCH_ROUND_ENV, SITE_ENV
from reference_impl.messages import VALIDATE, Array, Result
from reference_impl.watchdog import group_dies_with_client

BEHAVIOUR_ENV = "FLRELIA_SCRIPT_BEHAVIOUR"
IGNORE_SIGTERM = "ignore_sigterm"
SPAWN_CHILD = "spawn_child"
BEHAVIOURS = frozenset({IGNORE_SIGTERM, SPAWN_CHILD})


_DEFAULT_SITE = re.compile(r"site-([1-9][0-9]*)")


def site_number(site: str) -> int:
    """``N`` of a default name ``site-N``; of any other name a number of its UTF-8 bytes
    (1..1000, CRC-32), so a process that got its site's name wrong computes another
    update, and the model oracle sees it."""
    match = _DEFAULT_SITE.fullmatch(site)
    if match is not None:
        return int(match.group(1))
    return zlib.crc32(site.encode("utf-8")) % 1000 + 1


def local_update(model: Mapping[str, Array], site: str, round: int) -> dict[str, Array]:
    """Halve the model and add a site- and round-specific offset."""
    offset = site_number(site) * round
    return {name: (array * 0.5 + offset).astype(array.dtype) for name, array in model.items()}


def site_weight(site: str) -> float:
    """The number of samples the site claims: its aggregation weight."""
    return float(10 * site_number(site))


Behaviour = Point
"""One misbehaviour switched on for the processes its scope matches (round: the one the
process was launched for); its tag is ``FAULT#ID`` of the harness fault it stands for."""


def parse_behaviours(text: str) -> list[Behaviour]:
    """``name[site=S,round=R]@FAULT#ID`` items, comma-separated; scope and tag optional.

    Raises :class:`~pytest_flrelia.contract.failpoints.FailpointSyntaxError` for a
    malformed item and :class:`ValueError` for a behaviour the script does not have.
    """
    behaviours = failpoints.parse_points(text, source=BEHAVIOUR_ENV)
    unknown = sorted({b.name for b in behaviours} - BEHAVIOURS)
    if unknown:
        raise ValueError(
            f"{BEHAVIOUR_ENV}: unknown behaviour {', '.join(unknown)}; "
            f"valid: {', '.join(sorted(BEHAVIOURS))}"
        )
    return behaviours


class _Acts:
    """Records a behaviour's ``fault`` event the moment it changes something."""

    def __init__(self, site: str | None, round: int | None) -> None:
        self.site = site
        self.round = round
        self.timeline = Timeline.from_environment(training_lane(str(site)))

    def record(self, behaviour: Behaviour, did: str, child_pid: int | None = None) -> None:
        fault, fault_id = (
            (behaviour.name, None) if behaviour.tag is None else failpoints.parse_tag(behaviour.tag)
        )
        extra: dict[str, Any] = {} if child_pid is None else {"child_pid": child_pid}
        self.timeline.record(
            EventKind.FAULT,
            site=self.site,
            round=self.round,
            fault=fault,
            fault_id=fault_id,
            behaviour=behaviour.name,
            did=did,
            **extra,
        )


def _apply_behaviours(behaviours: list[Behaviour], acts: _Acts) -> subprocess.Popen[bytes] | None:
    mine = {b.name: b for b in behaviours if b.matches(acts.site, acts.round)}
    ignore = mine.get(IGNORE_SIGTERM)
    if ignore is not None:
        signal.signal(signal.SIGTERM, _ignoring(ignore, acts))
    spawn = mine.get(SPAWN_CHILD)
    if spawn is not None:
        child = subprocess.Popen(
            [sys.executable, "-c", "import signal, time\nwhile True: signal.pause()"],
            stdout=sys.stdout,
            stderr=sys.stderr,
        )
        acts.record(spawn, "started a child holding stdout", child_pid=child.pid)
        return child
    return None


def _ignoring(behaviour: Behaviour, acts: _Acts) -> Callable[[int, FrameType | None], None]:
    """A SIGTERM handler that changes nothing but says, once, that it swallowed one.

    Once only: a second SIGTERM can run this handler inside the first, and the
    timeline's lock is not re-entrant.
    """
    said = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal said
        if not said:
            said = True
            acts.record(behaviour, "ignored SIGTERM")

    return handler


def main() -> None:
    with group_dies_with_client():
        _train()


def _train() -> None:
    behaviours = parse_behaviours(os.environ.get(BEHAVIOUR_ENV, ""))
    child = None
    if behaviours:  # misbehaving on purpose
        launched = os.environ.get(LAUNCH_ROUND_ENV)
        acts = _Acts(os.environ.get(SITE_ENV), int(launched) if launched else None)
        child = _apply_behaviours(behaviours, acts)
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
