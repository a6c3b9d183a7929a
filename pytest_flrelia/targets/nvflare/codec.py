"""The job and its faults as JSON: how the harness hands a run to the runner process.

The runner and every training child read the same file (``job.json`` in the run's
workdir), so a fault's parameters reach the child exactly as the scenario loader parsed
them: durations as seconds, signals as :class:`signal.Signals` (written by name).
"""

from __future__ import annotations

import json
import signal
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pytest_flrelia.contract.faults import FaultSpec
from pytest_flrelia.contract.job import JobConfig, TensorSpec, Timeouts

SIGNAL_KEY = "__signal__"


def _param_to_json(value: object) -> object:
    if isinstance(value, signal.Signals):
        return {SIGNAL_KEY: value.name}
    return value


def _param_from_json(value: object) -> object:
    if isinstance(value, dict) and set(value) == {SIGNAL_KEY}:
        return signal.Signals[str(value[SIGNAL_KEY])]
    return value


def fault_to_json(spec: FaultSpec) -> dict[str, Any]:
    return {
        "fault": spec.fault,
        "site": spec.site,
        "round": spec.round,
        "params": {k: _param_to_json(v) for k, v in spec.params.items()},
        "line": spec.line,
        "optional": spec.optional,
        "index": spec.index,
    }


def fault_from_json(raw: Mapping[str, Any]) -> FaultSpec:
    return FaultSpec(
        fault=str(raw["fault"]),
        site=raw["site"],
        round=raw["round"],
        params={str(k): _param_from_json(v) for k, v in dict(raw["params"]).items()},
        line=int(raw["line"]),
        optional=bool(raw["optional"]),
        index=int(raw["index"]),
    )


def job_to_json(job: JobConfig) -> dict[str, Any]:
    raw = asdict(job)
    raw["validate_rounds"] = list(job.validate_rounds)
    return raw


def job_from_json(raw: Mapping[str, Any]) -> JobConfig:
    values = dict(raw)
    values["tensors"] = TensorSpec(**values["tensors"])
    values["timeouts"] = Timeouts(**values["timeouts"])
    values["validate_rounds"] = tuple(values["validate_rounds"])
    return JobConfig(**values)


def write_run(
    path: Path, job: JobConfig, faults: Sequence[FaultSpec], options: Mapping[str, Any]
) -> None:
    """Write one run: the job, its faults and the runner's options (pipe, events dir...)."""
    path.write_text(json.dumps({
        "job": job_to_json(job),
        "faults": [fault_to_json(f) for f in faults],
        "options": dict(options),
    }, indent=1, sort_keys=True))


def read_run(path: Path) -> tuple[JobConfig, tuple[FaultSpec, ...], dict[str, Any]]:
    raw = json.loads(path.read_text())
    return (
        job_from_json(raw["job"]),
        tuple(fault_from_json(f) for f in raw["faults"]),
        dict(raw["options"]),
    )


__all__ = [
    "fault_from_json",
    "fault_to_json",
    "job_from_json",
    "job_to_json",
    "read_run",
    "write_run",
]
