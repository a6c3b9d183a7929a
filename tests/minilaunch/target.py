"""The mini launcher as a flrelia target: rounds, sites in turn, one child each.

A round, per site: launch a child (or reuse the launch-once one), send the task,
wait for the result, pull every chunk of every tensor over the child's stdout and
check each chunk's digest, then release the child.  A per-round child then exits
by itself and the deferred stop reaps it; one that does not exit within
``stop_wait`` is stopped by force.  The server averages the updates by site weight.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
import threading
import time
from collections.abc import Sequence

import numpy as np

from minilaunch import protocol
from minilaunch.info import INFO, STOP_ON_RESULT
from minilaunch.launcher import Aborted, Child, ChildGone, ChildSilent, child_env
from pytest_flrelia.contract.events import client_lane, server_lane
from pytest_flrelia.contract.faults import FaultSpec, fault_event
from pytest_flrelia.contract.job import JobConfig
from pytest_flrelia.contract.result import Array, JobResult, RoundOutcome
from pytest_flrelia.contract.target import RunContext, TargetInfo
from pytest_flrelia.contract.timeline import EventKind

log = logging.getLogger(__name__)

CHILD_FAULTS = frozenset(
    {"crash", "early_sigterm", "slow_start", "ignore_sigterm", "orphan_child", "stuck_exit",
     "corrupt_chunk"}
)
"""Faults the child delivers (it gets them in its environment); the rest act here."""


class RoundFailed(Exception):
    pass


class MiniTarget:
    """The ``mini`` target: the correct launcher, or a variant with a planted bug."""

    info: TargetInfo = INFO

    def run(self, job: JobConfig, faults: Sequence[FaultSpec], context: RunContext) -> JobResult:
        run = StopOnResultRun if context.variant == STOP_ON_RESULT else MiniRun
        return run(job, faults, context).run()


class MiniRun:
    """One job."""

    def __init__(self, job: JobConfig, faults: Sequence[FaultSpec], context: RunContext) -> None:
        self.job = job
        self.faults = list(faults)
        self.context = context
        self.server = context.timeline.for_process(server_lane())
        self.events_file = context.workdir / "children.jsonl"
        self.children: dict[str, Child] = {}
        self.lock = threading.Lock()

    # -- the job ------------------------------------------------------------------

    def run(self) -> JobResult:
        started = time.monotonic()
        unregister = self.context.abort.on_abort(self.on_abort)
        model = protocol.initial_model(self.job)
        rounds: list[RoundOutcome] = []
        error: str | None = None
        self.server.record(EventKind.JOB_START, sites=self.job.sites, rounds=self.job.rounds)
        try:
            for round in range(1, self.job.rounds + 1):
                outcome = RoundOutcome(round, self.kind(round))
                rounds.append(outcome)
                try:
                    model = self.round(round, model, outcome)
                except (RoundFailed, Aborted) as exc:
                    outcome.error = error = f"round {round}: {exc}"
                    self.server.record(EventKind.ROUND_END, round=round, ok=False, error=error)
                    break
        finally:
            self.finish(ok=error is None)
            unregister()
            self.context.timeline.merge_file(self.events_file)
        self.server.record(EventKind.JOB_END, ok=error is None, error=error)
        return JobResult(
            config=self.job,
            ok=error is None,
            error=error,
            rounds=rounds,
            global_model=model,
            timeline=self.context.timeline,
            seconds=time.monotonic() - started,
        )

    def kind(self, round: int) -> str:
        return "validate" if round in self.job.validate_rounds else "train"

    def round(self, round: int, model: dict[str, Array], outcome: RoundOutcome) -> dict[str, Array]:
        started = time.monotonic()
        self.server.record(EventKind.ROUND_START, round=round)
        path = self.context.workdir / f"model-{round}.npz"
        np.savez(path, **model)  # type: ignore[arg-type]
        updates: dict[str, dict[str, Array]] = {}
        for site in self.job.site_names():
            updates[site] = self.site_round(site, round, str(path), outcome)
        if outcome.kind == "train":
            model = self.aggregate(round, model, updates, outcome)
        outcome.ok = True
        outcome.seconds = time.monotonic() - started
        self.server.record(EventKind.ROUND_END, round=round, ok=True, error=None)
        return model

    def aggregate(
        self,
        round: int,
        model: dict[str, Array],
        updates: dict[str, dict[str, Array]],
        outcome: RoundOutcome,
    ) -> dict[str, Array]:
        for spec in self.acting("slow_aggregation", None, round):
            delay = float(spec.params["delay"])  # type: ignore[arg-type]
            fault_event(self.server, spec, did=f"waits {delay:g}s before averaging", round=round)
            self.pause(delay)
        weights = {site: float(protocol.site_number(site)) for site in updates}
        averaged: dict[str, Array] = {}
        for name, array in model.items():
            total = np.zeros(array.size, dtype=np.float64)
            for site, update in updates.items():
                total += weights[site] * update[name].reshape(-1)
            averaged[name] = (total / sum(weights.values())).astype(array.dtype)
            outcome.aggregation_order[name] = [(site, 0, array.size) for site in updates]
            outcome.checksums[name] = hashlib.sha256(averaged[name].tobytes()).hexdigest()
        self.server.record(EventKind.AGGREGATED, round=round, sites=len(updates))
        return averaged

    # -- one site's round -----------------------------------------------------------

    def site_round(
        self, site: str, round: int, model: str, outcome: RoundOutcome
    ) -> dict[str, Array]:
        child = self.children.get(site) or self.launch(site, round)
        child.round = round
        child.record(EventKind.TASK_SENT, task_kind=outcome.kind)
        try:
            child.send({"op": "task", "round": round, "kind": outcome.kind, "model": model,
                        "chunk_bytes": self.job.chunk_bytes})
            result = child.receive("result", self.job.timeouts.execution)
        except (ChildGone, ChildSilent) as exc:
            raise RoundFailed(f"{site}: training process ended or went silent: {exc}") from exc
        refs = result["tensors"]
        child.record(EventKind.RESULT_RECEIVED, tensors=len(refs))
        self.after_result(child)
        update = self.pull(child, refs, outcome) if refs else {}
        if refs:
            with contextlib.suppress(ChildGone):  # it died after its last chunk: reaped below
                child.send({"op": "release"})
        if not self.job.launch_once:
            self.deferred_stop(child)
        return update

    def after_result(self, child: Child) -> None:
        """Nothing: the child is stopped only after the server pulled its tensors."""

    def launch(self, site: str, round: int) -> Child:
        if self.context.abort.is_set():
            raise Aborted("aborted: no more launches")
        env = child_env(
            os.environ,
            self.context.env,
            **{
                protocol.SITE_ENV: site,
                protocol.ROUND_ENV: str(round),
                protocol.ONCE_ENV: "1" if self.job.launch_once else "0",
                protocol.EVENTS_ENV: str(self.events_file),
                protocol.FAULTS_ENV: protocol.dump_faults(
                    [f for f in self.faults if f.fault in CHILD_FAULTS]
                ),
            },
        )
        child = Child(
            [sys.executable, "-m", protocol.CHILD_MODULE],
            env,
            site=site,
            round=round,
            client=self.context.timeline.for_process(client_lane(site)),
            cwd=str(self.context.workdir),
        )
        with self.lock:
            self.children[site] = child
        if self.context.abort.is_set():  # the abort hook may have run before we registered
            child.kill_now()
        try:
            child.receive("hello", self.job.timeouts.pre_init)
        except (ChildGone, ChildSilent) as exc:
            raise RoundFailed(f"{site}: training process ended before init: {exc}") from exc
        child.record(EventKind.INIT_SEEN, pid=child.pid)
        return child

    def pull(
        self, child: Child, refs: list[protocol.Message], outcome: RoundOutcome
    ) -> dict[str, Array]:
        """Every tensor of the result, chunk by chunk, each chunk's digest checked."""
        site, round = child.site, child.round
        for spec in self.acting("delayed_download", site, round):
            delay = float(spec.params["delay"])  # type: ignore[arg-type]
            fault_event(self.server, spec, did=f"waits {delay:g}s before the pull",
                        site=site, round=round)
            self.pause(delay)
        update: dict[str, Array] = {}
        for ref in refs:
            name = ref["name"]
            self.server.record(EventKind.DOWNLOAD_START, site=site, round=round, name=name)
            try:
                data = self.pull_tensor(child, ref)
            except (ChildGone, ChildSilent) as exc:
                self.server.record(EventKind.DOWNLOAD_FAILED, site=site, round=round, name=name,
                                   reason=str(exc))
                raise RoundFailed(f"failed to download from {site}: {exc}") from exc
            outcome.bytes_downloaded += len(data)
            self.server.record(EventKind.DOWNLOAD_DONE, site=site, round=round, name=name,
                               nbytes=len(data), bytes_digest=protocol.digest(data))
            array = np.frombuffer(data, dtype=ref["dtype"]).reshape(ref["shape"])
            update[name] = array.copy()
        return update

    def pull_tensor(self, child: Child, ref: protocol.Message) -> bytes:
        chunks = max(1, -(-int(ref["nbytes"]) // self.job.chunk_bytes))
        data = bytearray()
        for chunk in range(1, chunks + 1):
            for attempt in range(self.job.download_retries + 1):
                child.send({"op": "pull", "name": ref["name"], "chunk": chunk})
                piece = child.receive("chunk", self.job.timeouts.download_connect)
                got = protocol.decode(piece["data"])
                if protocol.digest(got) == piece["digest"]:
                    data += got
                    break
                self.server.record(EventKind.DOWNLOAD_RETRY, site=child.site, round=child.round,
                                   name=ref["name"], chunk=chunk, attempt=attempt + 1)
            else:
                raise ChildGone(f"chunk {chunk} of {ref['name']} arrived corrupted every time")
        if protocol.digest(bytes(data)) != ref["bytes_digest"]:
            raise ChildGone(f"{ref['name']} is not the tensor the result announced")
        return bytes(data)

    # -- stopping -------------------------------------------------------------------

    def deferred_stop(self, child: Child) -> None:
        """Wait for the child to exit by itself, then reap it; stop it if it does not."""
        code = child.returncode(self.job.timeouts.deferred_stop_wait)
        if code is not None and self.context.abort.is_set():
            child.reap()  # killed by the abort hook, not exited by itself
        elif code is None:
            log.warning("%s: round %d process did not exit by itself", child.site, child.round)
            child.stop(self.job.timeouts.stop_grace)
        else:
            child.record(EventKind.EXIT_SEEN, pid=child.pid, returncode=code)
            for spec in self.acting("slow_stop", child.site, child.round):
                delay = float(spec.params["delay"])  # type: ignore[arg-type]
                fault_event(child.client, spec, did=f"waits {delay:g}s before the reap",
                            site=child.site, round=child.round)
                self.pause(delay)
            child.reap()
        with self.lock:
            self.children.pop(child.site, None)

    def finish(self, *, ok: bool) -> None:
        """The end of the job: a launch-once child is told goodbye and deferred-stopped;
        after a failure every child left is stopped (one that already ended is reaped)."""
        with self.lock:
            left = list(self.children.values())
        for child in left:
            if ok:
                with contextlib.suppress(ChildGone):
                    child.send({"op": "bye"})
                self.deferred_stop(child)
            elif child.returncode(0) is not None:
                child.reap()
            else:
                child.stop(self.job.timeouts.stop_grace)
        with self.lock:
            self.children.clear()

    def on_abort(self) -> None:
        """Runs in the aborting thread before the harness sweeps: kill, stop launching."""
        with self.lock:
            left = list(self.children.values())
        for child in left:
            child.kill_now()

    def pause(self, seconds: float) -> None:
        if self.context.abort.wait(seconds):
            raise Aborted("aborted during a fault's delay")

    def acting(self, fault: str, site: str | None, round: int) -> list[FaultSpec]:
        return [
            f
            for f in self.faults
            if f.fault == fault
            and f.round in (None, round)
            and (site is None or f.site in (None, site))
        ]


class StopOnResultRun(MiniRun):
    """Planted bug: stops the child the moment its result arrives, before the pull."""

    def after_result(self, child: Child) -> None:
        child.stop(self.job.timeouts.stop_grace)


__all__ = ["MiniRun", "MiniTarget", "StopOnResultRun"]
