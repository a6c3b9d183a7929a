"""A target in one file: one process per site and round, its tensor pulled from a file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import MappingProxyType

import numpy as np
import xxhash

from pytest_flrelia.contract.events import client_lane, server_lane
from pytest_flrelia.contract.faults import FaultSpec
from pytest_flrelia.contract.job import JobConfig
from pytest_flrelia.contract.result import JobResult, RoundOutcome
from pytest_flrelia.contract.target import RunContext, TargetInfo
from pytest_flrelia.contract.timeline import EventKind

HERE = Path(__file__).resolve().parent


class ExampleTarget:
    info = TargetInfo(
        name="example",
        faults=MappingProxyType({}),  # it delivers no fault: those scenarios are skipped
        events=frozenset({
            EventKind.LAUNCH, EventKind.RESULT_RECEIVED, EventKind.DOWNLOAD_DONE,
            EventKind.STOP_REQUESTED, EventKind.SIGNAL_SENT, EventKind.REAPED,
            EventKind.ROUND_END, EventKind.TENSOR_SERVED, EventKind.RESULT_SENT,
            EventKind.GATE_OPEN, EventKind.EXIT, EventKind.EXIT_SEEN,
        }),
        unsupported=MappingProxyType({"crash": "the example delivers no fault"}),
    )

    def run(self, job: JobConfig, faults: Sequence[FaultSpec], context: RunContext) -> JobResult:
        started, server = time.monotonic(), context.timeline.for_process(server_lane())
        events = context.workdir / "children.jsonl"
        rounds: list[RoundOutcome] = []
        error = None
        for round in range(1, job.rounds + 1):
            outcome = RoundOutcome(round, "train")
            rounds.append(outcome)
            for site in job.site_names():
                if context.abort.is_set():
                    error = "aborted"
                    break
                error = self.site_round(job, context, site, round, events, outcome)
                if error:
                    break
            outcome.ok, outcome.error = error is None, error
            server.record(EventKind.ROUND_END, round=round, ok=error is None, error=error)
            if error:
                break
        context.timeline.merge_file(events)
        return JobResult(job, error is None, error, rounds, {}, context.timeline,
                         time.monotonic() - started)

    def site_round(self, job: JobConfig, context: RunContext, site: str, round: int,
                   events: Path, outcome: RoundOutcome) -> str | None:
        client = context.timeline.for_process(client_lane(site))
        env = {**os.environ, **context.env,  # the run tag reaches every process
               "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]),
               "EXAMPLE_SITE": site, "EXAMPLE_ROUND": str(round), "EXAMPLE_EVENTS": str(events),
               "EXAMPLE_SIZE": str(job.tensors.size_bytes // 8),
               "EXAMPLE_OUT": str(context.workdir / f"{site}-{round}.bin")}
        child = subprocess.Popen([sys.executable, "-m", "flrelia_example.child"], env=env,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                 start_new_session=True)
        client.record(EventKind.LAUNCH, site=site, round=round, pid=child.pid)
        try:
            assert child.stdin is not None and child.stdout is not None
            line = child.stdout.readline()
            if not line:
                return f"{site}: training process ended before its result"
            result = json.loads(line)
            client.record(EventKind.RESULT_RECEIVED, site=site, round=round, tensors=1)
            data = Path(result["path"]).read_bytes()  # the download
            digest = xxhash.xxh3_64_hexdigest(data)
            if digest != result["digest"]:
                return f"failed to download from {site}: digest mismatch"
            outcome.bytes_downloaded += len(data)
            context.timeline.for_process(server_lane()).record(
                EventKind.DOWNLOAD_DONE, site=site, round=round, name="w", bytes_digest=digest)
            outcome.checksums["w"] = digest
            assert np.frombuffer(data, dtype=np.float64).size == job.tensors.size_bytes // 8
            child.stdin.write("downloaded\n")  # open the gate: now it may exit
            child.stdin.flush()
            code = child.wait(job.timeouts.deferred_stop_wait)  # the deferred stop
            client.record(EventKind.EXIT_SEEN, site=site, round=round, pid=child.pid,
                          returncode=code)
        except subprocess.TimeoutExpired:  # it did not exit by itself: stop it
            client.record(EventKind.STOP_REQUESTED, site=site, round=round, pid=child.pid)
            os.killpg(child.pid, signal.SIGTERM)
            client.record(EventKind.SIGNAL_SENT, site=site, signal="SIGTERM", pgid=child.pid)
            try:
                child.wait(job.timeouts.stop_grace)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
        finally:
            if child.poll() is None:  # an early return left it running
                os.killpg(child.pid, signal.SIGKILL)
            code = child.wait()  # always reaped
            for stream in (child.stdin, child.stdout):
                if stream is not None:
                    stream.close()
            client.record(EventKind.REAPED, site=site, round=round, pid=child.pid,
                          returncode=code)
        return None
