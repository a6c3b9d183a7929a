"""The run file the harness writes and the runner (and each child) reads: nothing lost."""

from __future__ import annotations

import signal
from pathlib import Path
from types import MappingProxyType

from pytest_flrelia.contract.faults import FaultSpec
from pytest_flrelia.contract.job import JobConfig, TensorSpec, Timeouts
from pytest_flrelia.targets.nvflare import codec


def test_a_run_round_trips_with_signals_durations_and_scopes(tmp_path: Path) -> None:
    job = JobConfig(
        sites=3, rounds=4, launch_once=True, tensors=TensorSpec(2, 4096, "float32"),
        timeouts=Timeouts.fast().scaled(2.0), validate_rounds=(2, 4), seed=7,
    )
    faults = (
        FaultSpec("early_sigterm", "site-2", 1, {"at": "after_result_sent",
                  "signal": signal.SIGKILL, "delay": 0.25}, line=12, index=0),
        FaultSpec("corrupt_chunk", None, None, {"chunk": "last", "tensor": 1}, line=20,
                  optional=True, index=1),
    )
    path = tmp_path / "run.json"
    codec.write_run(path, job, faults, {"pipe": "file"})
    got_job, got_faults, options = codec.read_run(path)
    assert got_job == job
    assert got_faults == faults
    assert got_faults[0].params["signal"] is signal.SIGKILL
    assert options == {"pipe": "file"}


def test_params_as_the_loader_freezes_them_are_written() -> None:
    spec = FaultSpec("delayed_download", "site-1", 1, MappingProxyType({"delay": 0.8}), line=3)
    assert codec.fault_from_json(codec.fault_to_json(spec)).params == {"delay": 0.8}


def test_a_plain_dict_param_is_not_taken_for_a_signal() -> None:
    spec = FaultSpec("x", None, None, {"p": {"__signal__": "SIGTERM", "other": 1}}, line=1)
    assert codec.fault_from_json(codec.fault_to_json(spec)) == spec
