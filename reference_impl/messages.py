"""Tasks and results, and how they travel as pipe messages.

A task carries the global model as raw blobs; a result carries only
:class:`~reference_impl.download.TensorRef` references: the tensors stay in the
training subprocess until the server pulls them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from reference_impl.wire import Message, Topic

Array = npt.NDArray[Any]

TRAIN = "train"
VALIDATE = "validate"


@dataclass(frozen=True)
class Task:
    """One round's work for one site."""

    site: str
    round: int
    kind: str = TRAIN
    model: Mapping[str, Array] = field(default_factory=dict)

    def to_message(self) -> Message:
        names = list(self.model)
        return Message(
            Topic.TASK,
            {
                "site": self.site,
                "round": self.round,
                "kind": self.kind,
                "tensors": [
                    {
                        "name": n,
                        "dtype": str(self.model[n].dtype),
                        "shape": list(self.model[n].shape),
                    }
                    for n in names
                ],
            },
            tuple(np.ascontiguousarray(self.model[n]).tobytes() for n in names),
        )

    @classmethod
    def from_message(cls, message: Message) -> Task:
        p = message.payload
        specs = p.get("tensors", [])
        if len(specs) != len(message.blobs):
            raise ValueError("task lists a different number of tensors than it carries")
        model = {
            s["name"]: np.frombuffer(blob, dtype=s["dtype"]).reshape(s["shape"]).copy()
            for s, blob in zip(specs, message.blobs, strict=True)
        }
        return cls(site=str(p["site"]), round=int(p["round"]), kind=str(p["kind"]), model=model)


@dataclass(frozen=True)
class Result:
    """What the training script hands to ``send()``: tensors to publish, or only metrics."""

    tensors: Mapping[str, Array] = field(default_factory=dict)
    weight: float = 1.0
    metrics: Mapping[str, float] = field(default_factory=dict)


def result_message(site: str, round: int, result: Result, refs: list[Mapping[str, Any]]) -> Message:
    """The RESULT pipe message: metadata and tensor references, never tensor bytes."""
    return Message(
        Topic.RESULT,
        {
            "site": site,
            "round": round,
            "weight": result.weight,
            "metrics": dict(result.metrics),
            "refs": refs,
        },
    )
