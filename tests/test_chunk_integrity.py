"""Data integrity: a flipped bit anywhere in a tensor is caught, retried, and never aggregated.

The service flips chosen bits of chosen chunks *after* computing each chunk's
digest (the ``_chunk_payload`` override point), as a bad NIC or a buggy proxy
would.  A sink that records every byte it is given proves that no corrupted
byte got past the downloader, and that the retry resumed at the bad chunk.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_flrelia.contract import failpoints
from pytest_flrelia.contract.failpoints import FAILPOINTS_ENV
from pytest_flrelia.contract.faults import FaultSpec
from pytest_flrelia.contract.job import JobConfig, TensorSpec, Timeouts
from pytest_flrelia.contract.timeline import EventKind, Timeline
from pytest_flrelia.scenario.catalog import validate_params
from pytest_flrelia.targets.reference.faults import build_plan
from pytest_flrelia.targets.reference.oracle import expected_global_model
from reference_impl.download import Downloader, DownloadService, TensorRef
from reference_impl.job import run_job

WAIT = 10.0
CHUNK = 1024


class BitFlipService(DownloadService):
    """Flips ``(byte, bit)`` of the tensor in the chunk that holds ``byte``, once per entry.

    A corrupt chunk ends the downloader's attempt, so chunks sent after it on
    that connection are never read: the service corrupts at most one chunk per
    attempt (the first with a flip pending), and so every flip is seen.  An
    attempt starts where the offsets stop increasing.  Listing a position twice
    corrupts its chunk on two attempts in a row.
    """

    def __init__(self, flips: list[tuple[int, int]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._flips = list(flips)
        self._lock = threading.Lock()
        self._last_offset: dict[str, int] = {}
        self._attempt_corrupted: dict[str, bool] = {}
        self.corrupted: list[tuple[int, tuple[int, ...]]] = []
        """(chunk offset, byte positions flipped) for every corrupt chunk actually sent."""

    def _chunk_payload(self, ref: TensorRef, offset: int, data: memoryview) -> bytes | memoryview:
        end = offset + len(data)
        with self._lock:
            if offset <= self._last_offset.get(ref.tensor_id, -1):
                self._attempt_corrupted[ref.tensor_id] = False  # a retry began
            self._last_offset[ref.tensor_id] = offset
            if self._attempt_corrupted.get(ref.tensor_id):
                return data
            due: dict[int, int] = {}
            for entry in list(self._flips):
                position, bit = entry
                if offset <= position < end and position not in due:
                    due[position] = bit
                    self._flips.remove(entry)
            if not due:
                return data
            self._attempt_corrupted[ref.tensor_id] = True
            self.corrupted.append((offset, tuple(sorted(due))))
        corrupt = bytearray(data)
        for position, bit in due.items():
            corrupt[position - offset] ^= 1 << bit
        return bytes(corrupt)


class RecordingSink:
    """Keeps a copy of every chunk it is given, in order."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, int, bytes]] = []

    def write(self, ref: TensorRef, offset: int, data: memoryview) -> None:
        self.writes.append((ref.tensor_id, offset, bytes(data)))

    def assembled(self, ref: TensorRef) -> bytes:
        return b"".join(d for tid, _, d in self.writes if tid == ref.tensor_id)


@pytest.fixture
def timeline() -> Timeline:
    return Timeline("test")


@pytest.fixture
def services() -> Iterator[list[DownloadService]]:
    started: list[DownloadService] = []
    yield started
    for service in started:
        service.close()


def download_with_flips(
    services: list[DownloadService],
    timeline: Timeline,
    tensor: np.ndarray,
    flips: list[tuple[int, int]],
    *,
    chunk_bytes: int = CHUNK,
) -> tuple[BitFlipService, TensorRef, RecordingSink]:
    service = BitFlipService(flips, site="site-1", chunk_bytes=chunk_bytes, timeline=timeline)
    services.append(service)
    (ref,) = service.publish({"w": tensor}, round=1)
    sink = RecordingSink()
    downloader = Downloader(
        retries=len(flips), retry_delay=0.0, connect_timeout=WAIT, timeline=timeline
    )
    downloader.download(ref, sink)
    return service, ref, sink


def assert_clean_and_exact(
    sink: RecordingSink, ref: TensorRef, original: bytes, chunk_bytes: int = CHUNK
) -> None:
    """No corrupted byte reached the sink; each chunk arrived once, in order; the whole is exact."""
    for _, offset, data in sink.writes:
        assert data == original[offset : offset + len(data)], f"corrupt bytes at {offset} in sink"
    assert [o for _, o, _ in sink.writes] == list(range(0, ref.nbytes, chunk_bytes))
    assert sink.assembled(ref) == original


def assert_retried_each_corrupt_chunk(
    timeline: Timeline, service: BitFlipService, ref: TensorRef, expected_chunks: list[int]
) -> None:
    assert [offset for offset, _ in service.corrupted] == expected_chunks, "flips not sent"
    retries = timeline.events(EventKind.DOWNLOAD_RETRY)
    assert [r.detail["offset"] for r in retries] == expected_chunks
    for retry, offset in zip(retries, expected_chunks, strict=True):
        assert retry.detail["reason"] == f"corrupt chunk at offset {offset}: digest mismatch"
    (done,) = timeline.events(EventKind.DOWNLOAD_DONE)
    assert not timeline.events(EventKind.DOWNLOAD_FAILED)
    assert done.detail["checksum"] == ref.checksum


def tensor_of(nbytes: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, nbytes, dtype=np.uint8)


def every_chunk_once(nbytes: int) -> list[tuple[int, int]]:
    """One flip per chunk, at a different byte and bit in each."""
    return [
        (start + (start // CHUNK * 37) % min(CHUNK, nbytes - start), start // CHUNK % 8)
        for start in range(0, nbytes, CHUNK)
    ]


EVERY = 6 * CHUNK + 256
POSITIONS: dict[str, tuple[int, list[tuple[int, int]], list[int]]] = {
    # where: (tensor bytes, flips as (byte, bit), offsets of the chunks that must be retried)
    "first byte of the first chunk": (4 * CHUNK, [(0, 0)], [0]),
    "last byte of the last chunk": (4 * CHUNK, [(4 * CHUNK - 1, 7)], [3 * CHUNK]),
    "a middle chunk": (5 * CHUNK, [(2 * CHUNK + 517, 3)], [2 * CHUNK]),
    "a short final chunk": (3 * CHUNK + 200, [(3 * CHUNK + 100, 5)], [3 * CHUNK]),
    "last byte of a short final chunk": (3 * CHUNK + 200, [(3 * CHUNK + 199, 6)], [3 * CHUNK]),
    "a single-chunk tensor": (600, [(300, 1)], [0]),
    "a one-byte tensor": (1, [(0, 4)], [0]),
    "every chunk once": (EVERY, every_chunk_once(EVERY), list(range(0, EVERY, CHUNK))),
    "one chunk on two attempts in a row": (
        3 * CHUNK,
        [(CHUNK + 1, 2), (CHUNK + 1, 2)],
        [CHUNK, CHUNK],
    ),
    "two flips in one chunk": (2 * CHUNK, [(10, 0), (11, 0)], [0]),
}


@pytest.mark.parametrize("where", list(POSITIONS))
def test_a_flipped_bit_is_retried_and_never_reaches_the_sink(
    services: list[DownloadService], timeline: Timeline, where: str
) -> None:
    nbytes, flips, retried = POSITIONS[where]
    tensor = tensor_of(nbytes)

    service, ref, sink = download_with_flips(services, timeline, tensor, flips)

    assert_retried_each_corrupt_chunk(timeline, service, ref, retried)
    assert_clean_and_exact(sink, ref, tensor.tobytes())
    assert service.wait_all_downloaded(WAIT), "the gate opens once the tensor is verified"


@settings(max_examples=40, deadline=None)
@given(
    data=st.data(),
    nbytes=st.integers(1, 6000),
    chunk_bytes=st.sampled_from([1, 7, 64, 1000, 4096, 8192]),
)
def test_any_single_bit_flip_is_caught(data: st.DataObject, nbytes: int, chunk_bytes: int) -> None:
    if nbytes // chunk_bytes > 200:
        chunk_bytes = 64  # keep one-byte chunks for small tensors: the test stays fast
    position = data.draw(st.integers(0, nbytes - 1), label="position")
    bit = data.draw(st.integers(0, 7), label="bit")
    tensor = tensor_of(nbytes, seed=nbytes)
    timeline = Timeline("test")
    started: list[DownloadService] = []
    try:
        service, ref, sink = download_with_flips(
            started, timeline, tensor, [(position, bit)], chunk_bytes=chunk_bytes
        )
        chunk = position // chunk_bytes * chunk_bytes
        assert_retried_each_corrupt_chunk(timeline, service, ref, [chunk])
        assert_clean_and_exact(sink, ref, tensor.tobytes(), chunk_bytes)
        assert service.wait_all_downloaded(WAIT)
    finally:
        for each in started:
            each.close()


def test_the_corrupt_chunk_failpoint_is_caught_in_process(
    services: list[DownloadService], timeline: Timeline
) -> None:
    """``download.corrupt_chunk`` flips the middle byte of the second chunk sent."""
    tensor = tensor_of(4 * CHUNK + 10)
    service = DownloadService(site="site-1", chunk_bytes=CHUNK, timeline=timeline)
    services.append(service)
    (ref,) = service.publish({"w": tensor}, round=1)
    sink = RecordingSink()

    with failpoints.scoped("download.corrupt_chunk[site=site-1]=1*off->1*return"):
        Downloader(retries=1, retry_delay=0.0, timeline=timeline).download(ref, sink)
        assert failpoints.hits("download.corrupt_chunk") == 1

    (retry,) = timeline.events(EventKind.DOWNLOAD_RETRY)
    assert retry.detail["reason"] == f"corrupt chunk at offset {CHUNK}: digest mismatch"
    assert_clean_and_exact(sink, ref, tensor.tobytes())
    assert service.wait_all_downloaded(WAIT)


@pytest.mark.slow
def test_a_job_with_corrupt_chunks_in_every_training_process_aggregates_exactly() -> None:
    config = JobConfig(
        sites=2,
        rounds=2,
        tensors=TensorSpec(count=2, size_bytes=16 * 1024),
        timeouts=Timeouts.fast(),
        chunk_bytes=4 * 1024,
        download_retries=1,
    )
    # The second chunk each training process sends is corrupted: one per process.
    spec = "download.corrupt_chunk=1*off->1*return"

    result = run_job(config, subprocess_env={FAILPOINTS_ENV: spec})

    assert result.ok, (result.error, result.site_errors)
    processes = config.sites * config.rounds
    fired = [
        e
        for e in result.timeline.events(EventKind.FAILPOINT)
        if e.detail.get("name") == "download.corrupt_chunk"
    ]
    assert len(fired) == processes and {e.pid for e in fired} == set(result.launched_pids)
    retries = result.timeline.events(EventKind.DOWNLOAD_RETRY)
    assert len(retries) == processes
    assert all("corrupt chunk at offset" in r.detail["reason"] for r in retries)
    assert {(r.site, r.round) for r in retries} == {
        (site, round) for site in config.site_names() for round in (1, 2)
    }
    served = {
        e.detail["tensor_id"]: e.detail["checksum"]
        for e in result.timeline.events(EventKind.TENSOR_SERVED)
    }
    done = {
        e.detail["tensor_id"]: e.detail["checksum"]
        for e in result.timeline.events(EventKind.DOWNLOAD_DONE)
    }
    assert done == served and len(done) == processes * config.tensors.count
    expected = expected_global_model(config)
    assert set(result.global_model) == set(expected)
    for name, array in expected.items():
        np.testing.assert_allclose(result.global_model[name], array, rtol=1e-12, atol=0)


def _download_under(
    spec: str, services: list[DownloadService], timeline: Timeline, chunks: int, retries: int
) -> tuple[TensorRef, bytes, RecordingSink]:
    tensor = tensor_of(chunks * CHUNK - 8)  # the last chunk is short
    service = DownloadService(site="site-1", chunk_bytes=CHUNK, timeline=timeline)
    services.append(service)
    (ref,) = service.publish({"w": tensor}, round=1)
    sink = RecordingSink()
    with failpoints.scoped(spec):
        Downloader(retries=retries, retry_delay=0.0, timeline=timeline).download(ref, sink)
    assert service.wait_all_downloaded(WAIT)
    return ref, tensor.tobytes(), sink


def test_each_corrupted_chunk_costs_exactly_one_download_attempt(
    services: list[DownloadService], timeline: Timeline
) -> None:
    """Chunks streamed behind a corrupt one are never read: they must not use up the count."""
    ref, original, sink = _download_under(
        "download.corrupt_chunk[site=site-1]=3*return", services, timeline, chunks=6, retries=3
    )
    retries = timeline.events(EventKind.DOWNLOAD_RETRY)
    assert [r.detail["reason"] for r in retries] == [
        "corrupt chunk at offset 0: digest mismatch"
    ] * 3
    assert len(timeline.events(EventKind.DOWNLOAD_DONE)) == 1
    assert_clean_and_exact(sink, ref, original)


@pytest.mark.parametrize(("chunk", "offset"), [(1, 0), (3, 2 * CHUNK), ("last", 5 * CHUNK)])
def test_the_corrupt_chunk_fault_corrupts_the_chunk_it_names(
    services: list[DownloadService], timeline: Timeline, chunk: int | str, offset: int
) -> None:
    entry = {"fault": "corrupt_chunk", "site": "site-1", "times": 3, "chunk": chunk}
    params = validate_params("corrupt_chunk", entry, "faults[0]")
    spec = FaultSpec("corrupt_chunk", "site-1", None, params, line=0)
    plan = build_plan([spec], JobConfig())
    (failpoint,) = plan.subprocess_failpoints
    ref, original, sink = _download_under(failpoint, services, timeline, chunks=6, retries=3)
    retries = timeline.events(EventKind.DOWNLOAD_RETRY)
    assert [(r.detail["offset"], r.detail["reason"]) for r in retries] == [
        (offset, f"corrupt chunk at offset {offset}: digest mismatch")
    ] * 3
    assert_clean_and_exact(sink, ref, original)
