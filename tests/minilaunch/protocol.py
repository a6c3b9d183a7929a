"""The wire between the mini launcher and its child: one JSON object per line.

The parent writes ``task``, ``pull``, ``release`` and ``bye`` to the child's stdin;
the child writes ``hello``, ``result`` and ``chunk`` to its stdout.  Tensors travel
as base64 chunks, each with the xxhash digest of its bytes, so the parent can catch
a chunk that changed on the way.  The training rule lives here too: the child
applies it, the oracle recomputes it.
"""

from __future__ import annotations

import base64
import json
import signal
from collections.abc import Mapping, Sequence
from typing import IO, Any

import numpy as np
import xxhash

from pytest_flrelia.contract.faults import FaultSpec
from pytest_flrelia.contract.job import JobConfig
from pytest_flrelia.contract.result import Array

Message = dict[str, Any]

CHILD_MODULE = "minilaunch.child"
SITE_ENV = "MINILAUNCH_SITE"
ROUND_ENV = "MINILAUNCH_ROUND"
"""The round the process was launched for."""
ONCE_ENV = "MINILAUNCH_ONCE"
"""``1``: the process serves every round (``launch_once``) and exits on ``bye``."""
EVENTS_ENV = "MINILAUNCH_EVENTS"
"""The JSON-lines file the child appends its events to; the parent merges it."""
FAULTS_ENV = "MINILAUNCH_FAULTS"
"""The faults the child delivers itself, as JSON (:func:`dump_faults`)."""


def send(stream: IO[str], message: Message) -> None:
    stream.write(json.dumps(message) + "\n")
    stream.flush()


def digest(data: bytes) -> str:
    return xxhash.xxh3_64_hexdigest(data)


def encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def decode(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"))


def site_number(site: str) -> int:
    """``site-3`` -> 3: the site's weight in the average."""
    return int(site.rsplit("-", 1)[1])


def initial_model(job: JobConfig) -> dict[str, Array]:
    rng = np.random.default_rng(job.seed)
    dtype = np.dtype(job.tensors.dtype)
    size = job.tensors.size_bytes // dtype.itemsize
    return {f"t{i}": rng.standard_normal(size).astype(dtype) for i in range(job.tensors.count)}


def local_update(model: Mapping[str, Array], site: str, round: int) -> dict[str, Array]:
    """What a site's training turns the global model into in ``round``."""
    step = site_number(site) * round * 0.01
    return {name: (array * 0.5 + step).astype(array.dtype) for name, array in model.items()}


def dump_faults(specs: Sequence[FaultSpec]) -> str:
    return json.dumps(
        [
            {
                "fault": s.fault,
                "site": s.site,
                "round": s.round,
                "index": s.index,
                "optional": s.optional,
                "params": {
                    k: int(v) if isinstance(v, signal.Signals) else v for k, v in s.params.items()
                },
            }
            for s in specs
        ]
    )


def load_faults(text: str) -> list[FaultSpec]:
    return [
        FaultSpec(
            fault=raw["fault"],
            site=raw["site"],
            round=raw["round"],
            params={
                k: signal.Signals(v) if k == "signal" else v for k, v in raw["params"].items()
            },
            line=0,
            optional=raw["optional"],
            index=raw["index"],
        )
        for raw in json.loads(text)
    ]
