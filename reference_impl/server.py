"""The simulated server: dispatch tasks, take SubmitUpdates, pull tensors, aggregate.

Downloads stream chunk by chunk into a weighted-sum accumulator, so server
memory grows with the chunk window, not with the number of sites.  Sites are
pulled in parallel, so the order in which their chunks are added (float
addition is not associative) is recorded per round: whoever recomputes the
average can follow it and compare bytes.
"""

from __future__ import annotations

import hashlib
import logging
import math
import queue
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import xxhash

from pytest_flrelia.contract.failpoints import failpoint
from pytest_flrelia.contract.job import JobConfig
from pytest_flrelia.contract.result import AddedRange, RoundOutcome
from pytest_flrelia.contract.timeline import EventKind, Timeline
from reference_impl.download import Downloader, DownloadError, TensorRef
from reference_impl.executor import RoundResult
from reference_impl.messages import TRAIN, VALIDATE, Array, Task

log = logging.getLogger(__name__)


class RoundFailed(RuntimeError):
    """A round could not complete; the message names the site and the reason."""


@dataclass(frozen=True)
class Submission:
    """A site's SubmitUpdate: its result, or the error that prevented one."""

    site: str
    round: int
    result: RoundResult | None = None
    error: str | None = None


def initial_model(config: JobConfig) -> dict[str, Array]:
    spec = config.tensors
    dtype = np.dtype(spec.dtype)
    elements = max(1, spec.size_bytes // dtype.itemsize)
    return {f"layer-{i}": np.full(elements, 1.0, dtype=dtype) for i in range(spec.count)}


def checksum(array: Array) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


class WeightedSumSink:
    """Adds each verified chunk, times its site's weight, into a float64 sum.

    It also keeps what it needs to be checked from outside: the xxh3-128 of the
    bytes it added for each tensor (:meth:`received_digest`, computed from the
    values it sums, not from the downloader's chunk digests) and the order of
    its additions (:attr:`order`).
    """

    def __init__(self, model: Mapping[str, Array]) -> None:
        self.sums = {name: np.zeros(a.size, dtype=np.float64) for name, a in model.items()}
        self._weights: dict[str, float] = {}
        self._locks = {name: threading.Lock() for name in model}
        self._received: dict[str, xxhash.xxh3_128] = {}
        self.order: dict[str, list[AddedRange]] = {name: [] for name in model}
        self.bytes = 0
        self._split: dict[str, tuple[int, bytes]] = {}
        """Tensor id -> (byte offset, bytes) of an element a chunk boundary split: chunks
        are sized in bytes, whatever the dtype, so its rest comes with the next chunk."""

    def set_weight(self, site: str, weight: float) -> None:
        self._weights[site] = weight

    def write(self, ref: TensorRef, offset: int, data: memoryview) -> None:
        if ref.name not in self.sums:
            raise ValueError(f"{ref.site} returned unknown tensor {ref.name!r}")
        corrupt = failpoint("server.corrupt_aggregated", site=ref.site, round=ref.round)
        itemsize = np.dtype(ref.dtype).itemsize
        with self._locks[ref.name]:
            begin, head = self._split.pop(ref.tensor_id, (offset, b""))
            if begin + len(head) != offset:
                raise ValueError(
                    f"{ref.site} {ref.name}: a chunk at byte {offset} does not continue the "
                    f"element split at byte {begin + len(head)}"
                )
            whole = memoryview(head + bytes(data)) if head else data
            usable = len(whole) - len(whole) % itemsize
            if usable < len(whole):
                self._split[ref.tensor_id] = (begin + usable, bytes(whole[usable:]))
            values = np.frombuffer(whole[:usable], dtype=ref.dtype)
            if corrupt:
                values = _flip_lowest_bit(values)
            start = begin // itemsize
            target = self.sums[ref.name][start : start + values.size]
            target += self._weights[ref.site] * values
            self._received.setdefault(ref.tensor_id, xxhash.xxh3_128()).update(values.data)
            _append_range(self.order[ref.name], (ref.site, start, start + values.size))
            self.bytes += len(data)

    def received_digest(self, ref: TensorRef) -> str:
        """xxh3-128 (hex) of the bytes of ``ref`` this sink added, in order."""
        with self._locks[ref.name]:
            return self._received.get(ref.tensor_id, xxhash.xxh3_128()).hexdigest()

    def average(self, model: Mapping[str, Array]) -> dict[str, Array]:
        total = math.fsum(self._weights.values())  # exact, whatever order sites came in
        return {
            name: (self.sums[name] / total).astype(model[name].dtype).reshape(model[name].shape)
            for name in model
        }


def _append_range(ranges: list[AddedRange], added: AddedRange) -> None:
    """Record ``added``, merged into the last range when it continues it."""
    if ranges and ranges[-1][0] == added[0] and ranges[-1][2] == added[1]:
        ranges[-1] = (added[0], ranges[-1][1], added[2])
    else:
        ranges.append(added)


def _flip_lowest_bit(values: np.ndarray) -> np.ndarray:
    """A copy of ``values`` whose first element differs in its lowest bit: 1 ulp of a float."""
    flipped: np.ndarray = values.copy()
    if flipped.size:
        flipped.view(np.uint8)[0 if flipped.dtype.byteorder != ">" else flipped.itemsize - 1] ^= 1
    return flipped


class Server:
    """Runs the rounds; each site is reached through its task queue."""

    def __init__(
        self,
        config: JobConfig,
        *,
        timeline: Timeline,
        downloader: Downloader,
        abort: threading.Event,
    ) -> None:
        self.config = config
        self.timeline = timeline
        self.downloader = downloader
        self.abort = abort
        self.model = initial_model(config)
        self.task_queues: dict[str, queue.Queue[Task | None]] = {
            site: queue.Queue() for site in config.site_names()
        }
        self.submissions: queue.Queue[Submission] = queue.Queue()
        self.outcomes: list[RoundOutcome] = []

    def submit(self, submission: Submission) -> None:
        """SubmitUpdate: called by a site's client runner."""
        self.timeline.record(
            EventKind.SUBMIT,
            site=submission.site,
            round=submission.round,
            ok=submission.error is None,
        )
        self.submissions.put(submission)

    def run(self) -> None:
        """All rounds; raises :class:`RoundFailed` on the first failed round."""
        try:
            for round in range(1, self.config.rounds + 1):
                self._run_round(round)
        finally:
            for tasks in self.task_queues.values():
                tasks.put(None)

    def _run_round(self, round: int) -> None:
        kind = VALIDATE if round in self.config.validate_rounds else TRAIN
        outcome = RoundOutcome(round=round, kind=kind)
        self.outcomes.append(outcome)
        started = time.monotonic()
        self.timeline.record(EventKind.ROUND_START, round=round, kind=kind)
        try:
            for site, tasks in self.task_queues.items():
                tasks.put(Task(site=site, round=round, kind=kind, model=self.model))
            sink = WeightedSumSink(self.model)
            self._collect(round, sink)
            if kind == TRAIN:
                failpoint("server.before_aggregate", round=round)
                self.model = sink.average(self.model)
                outcome.checksums = {name: checksum(a) for name, a in self.model.items()}
                self.timeline.record(EventKind.AGGREGATED, round=round, checksums=outcome.checksums)
            outcome.bytes_downloaded = sink.bytes
            outcome.aggregation_order = sink.order
            outcome.ok = True
        except RoundFailed as exc:
            outcome.error = str(exc)
            raise
        finally:
            outcome.seconds = time.monotonic() - started
            self.timeline.record(
                EventKind.ROUND_END, round=round, ok=outcome.ok, error=outcome.error
            )

    def _collect(self, round: int, sink: WeightedSumSink) -> None:
        """Take every site's SubmitUpdate and pull its tensors, sites in parallel."""
        pending = set(self.task_queues)
        errors: list[str] = []
        downloads: list[threading.Thread] = []
        deadline = time.monotonic() + self.config.timeouts.submit_update
        while pending:
            if self.abort.is_set():
                raise self._aborted()
            try:
                sub = self.submissions.get(timeout=min(0.1, max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                if time.monotonic() >= deadline:
                    raise RoundFailed(
                        f"round {round}: no SubmitUpdate from {', '.join(sorted(pending))} within "
                        f"{self.config.timeouts.submit_update}s"
                    ) from None
                continue
            if sub.round != round or sub.site not in pending:
                log.warning("dropping a SubmitUpdate from %s for round %s", sub.site, sub.round)
                continue
            pending.discard(sub.site)
            if sub.error is not None or sub.result is None:
                raise RoundFailed(sub.error or f"{sub.site}: empty SubmitUpdate")
            sink.set_weight(sub.site, sub.result.weight)
            refs = [TensorRef.from_json(dict(r)) for r in sub.result.refs]
            if refs:
                thread = threading.Thread(
                    target=self._download,
                    args=(sub.site, round, refs, sink, errors),
                    name=f"download-{sub.site}-round-{round}",
                    daemon=True,
                )
                thread.start()
                downloads.append(thread)
        for thread in downloads:
            while thread.is_alive():
                thread.join(0.1)
                if self.abort.is_set():
                    raise self._aborted()
        if errors:
            raise RoundFailed(errors[0])

    def _aborted(self) -> RoundFailed:
        """Stop pulling (a download may be stuck on a dead peer) and say why."""
        self.downloader.cancel()
        return RoundFailed("job aborted")

    def _download(
        self, site: str, round: int, refs: list[TensorRef], sink: WeightedSumSink, errors: list[str]
    ) -> None:
        try:
            failpoint("server.before_download", site=site, round=round)
            for ref in refs:
                self.downloader.download(ref, sink)
        except DownloadError as exc:
            errors.append(str(exc))
