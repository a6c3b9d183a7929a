"""A client that runs a job whose training process never finishes, and prints its pid.

The test SIGKILLs this client: the training process (and its worker child)
must notice and end themselves.
"""

from __future__ import annotations

import dataclasses

from pytest_flrelia.contract.job import JobConfig, TensorSpec, Timeouts
from pytest_flrelia.contract.timeline import Event, EventKind, Timeline
from reference_impl.job import run_job


def announce(event: Event) -> None:
    if event.kind is EventKind.LAUNCH:
        print(f"training pid {event.detail['pid']}", flush=True)


timeline = Timeline("server")
timeline.subscribe(announce)
run_job(
    JobConfig(
        sites=1,
        rounds=1,
        tensors=TensorSpec(count=1, size_bytes=1024),
        timeouts=dataclasses.replace(Timeouts.fast(), pre_init=120.0, heartbeat=120.0),
    ),
    timeline=timeline,
    subprocess_env={
        "FLRELIA_FAILPOINTS": "agent.after_init=hang",
        "FLRELIA_SCRIPT_BEHAVIOUR": "spawn_child",
    },
)
