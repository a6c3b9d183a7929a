"""Tensor download from a real subprocess, next to a raw loopback socket moving the same bytes.

The serving subprocess (``python -m benchmarks.download serve ...``) holds one
array and offers it two ways: published on a :class:`DownloadService` (one fresh
ref per ``publish`` command on its stdin) and as plain bytes on a raw socket (every
connection gets the whole array, in the same chunk size).  This process pulls
both, interleaved, and times each pull.

Peak memory is the kernel's RSS high-water mark of this process (``VmHWM``),
reset through ``/proc/self/clear_refs`` right before each pull: exact, where a
sampling thread could miss a short spike, and it counts numpy and socket
buffers that tracemalloc does not see.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import numpy as np

from benchmarks import REPO_ROOT
from benchmarks.figure import Figure, Goal
from reference_impl.download import Downloader, DownloadService, TensorRef, chunk_digest

THROUGHPUT_GOAL = Goal(">=", 0.6)
PEAK_MEMORY_GOAL = Goal("<=", 0.25)
DEFAULT_CHUNK_BYTES = 1024 * 1024
REPLY_TIMEOUT = 120.0
"""Upper bound for the server process to build, hash and publish its array."""
PULL_TIMEOUT = 120.0
EXIT_TIMEOUT = 10.0
MIB = 1024 * 1024
HASHED_BYTES = 64 * MIB
_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


class CountingSink:
    """Counts bytes and drops them: the downloader verifies chunks and checksum itself,
    so the figure is the transport, not what an application does with the bytes."""

    def __init__(self) -> None:
        self.nbytes = 0

    def write(self, ref: TensorRef, offset: int, data: memoryview) -> None:
        self.nbytes += data.nbytes


class PeakRss:
    """Growth of this process's RSS high-water mark over a ``with`` block (Linux)."""

    def __init__(self) -> None:
        self.growth = 0

    def __enter__(self) -> PeakRss:
        _CLEAR_REFS.write_text("5")  # resets VmHWM to the current RSS
        self._start = _status_bytes("VmHWM")
        return self

    def __exit__(self, *exc: object) -> None:
        self.growth = _status_bytes("VmHWM") - self._start


def _status_bytes(field: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{_STATUS} has no {field}")


# --------------------------------------------------------------------------- the pulls


def raw_pull_seconds(address: tuple[str, int], nbytes: int, chunk_bytes: int) -> float:
    """Receive ``nbytes`` from the raw socket into one reused buffer."""
    buffer = memoryview(bytearray(chunk_bytes))
    started = time.perf_counter()
    with socket.create_connection(address, timeout=PULL_TIMEOUT) as sock:
        got = 0
        while got < nbytes:
            n = sock.recv_into(buffer)
            if n == 0:
                raise ConnectionError(f"raw sender closed after {got} of {nbytes} bytes")
            got += n
    return time.perf_counter() - started


def download_seconds(ref: TensorRef) -> tuple[float, int]:
    """Pull ``ref`` with the server's downloader; returns the time and the RSS peak growth."""
    downloader = Downloader(retries=0, retry_delay=0.0, connect_timeout=EXIT_TIMEOUT)
    sink = CountingSink()
    with PeakRss() as peak:
        started = time.perf_counter()
        downloader.download(ref, sink)
        seconds = time.perf_counter() - started
    if sink.nbytes != ref.nbytes:
        raise RuntimeError(f"downloaded {sink.nbytes} of {ref.nbytes} bytes")
    return seconds, peak.growth


def hash_rate(digest: Callable[[memoryview], object], chunk_bytes: int) -> float:
    """MiB/s of one core running ``digest`` over chunks: the verification's own speed limit."""
    data = memoryview(np.resize(np.arange(256, dtype=np.uint8), chunk_bytes).data)
    rounds = max(1, HASHED_BYTES // chunk_bytes)
    started = time.perf_counter()
    for _ in range(rounds):
        digest(data)
    return rounds * chunk_bytes / (time.perf_counter() - started) / MIB


class ServerProcess:
    """The serving subprocess, driven by one command line per request on its stdin."""

    def __init__(self, nbytes: int, chunk_bytes: int, stderr: IO[bytes]) -> None:
        self._stderr = stderr
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), *_pythonpath()])}
        self._process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.download", "serve", str(nbytes), str(chunk_bytes)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=env,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        assert self._process.stdout is not None
        threading.Thread(
            target=_read_lines,
            args=(self._process.stdout, self._lines),
            name="download-bench-reader",
            daemon=True,
        ).start()
        hello = json.loads(self._reply())
        self.raw_address: tuple[str, int] = (hello["raw"][0], hello["raw"][1])

    def publish(self) -> TensorRef:
        """A fresh ref for the array (a ref is served once, then released)."""
        assert self._process.stdin is not None
        self._process.stdin.write("publish\n")
        self._process.stdin.flush()
        return TensorRef.from_json(json.loads(self._reply()))

    def close(self) -> None:
        """End of stdin ends the server; kill it if it does not go."""
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(EXIT_TIMEOUT)

    def _reply(self) -> str:
        try:
            line = self._lines.get(timeout=REPLY_TIMEOUT)
        except queue.Empty:
            line = ""
        if not line:
            self._stderr.seek(0)
            stderr = self._stderr.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"download server gave no reply; its stderr:\n{stderr}")
        return line


def _pythonpath() -> list[str]:
    value = os.environ.get("PYTHONPATH", "")
    return [p for p in value.split(os.pathsep) if p]


def _read_lines(stream: IO[str], lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line)
    lines.put("")


@contextmanager
def server_process(nbytes: int, chunk_bytes: int) -> Iterator[ServerProcess]:
    with tempfile.TemporaryFile() as stderr:
        server = ServerProcess(nbytes, chunk_bytes, stderr)
        try:
            yield server
        finally:
            server.close()


def measure_download(
    *, nbytes: int, repeats: int, chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> list[Figure]:
    """``download_throughput_ratio`` and ``download_peak_memory_ratio``, raw and download
    pulls interleaved; medians of ``repeats`` each.  The single-core speed of the chunk
    digest is reported beside them: it is the only per-byte work the downloader adds."""
    raw_times: list[float] = []
    download_times: list[float] = []
    peaks: list[int] = []
    with server_process(nbytes, chunk_bytes) as server:
        for _ in range(repeats):
            raw_times.append(raw_pull_seconds(server.raw_address, nbytes, chunk_bytes))
            seconds, peak = download_seconds(server.publish())
            download_times.append(seconds)
            peaks.append(peak)
    raw_s, download_s = statistics.median(raw_times), statistics.median(download_times)
    peak = max(peaks)
    return [
        Figure("raw_loopback_mib_per_s", nbytes / raw_s / MIB),
        Figure("download_mib_per_s", nbytes / download_s / MIB),
        Figure("chunk_digest_mib_per_s", hash_rate(chunk_digest, chunk_bytes)),
        Figure("download_throughput_ratio", raw_s / download_s, THROUGHPUT_GOAL),
        Figure("download_peak_memory_mib", peak / MIB),
        Figure("download_peak_memory_ratio", peak / nbytes, PEAK_MEMORY_GOAL),
    ]


# --------------------------------------------------------------------------- server side


def serve(nbytes: int, chunk_bytes: int) -> None:
    """The subprocess: one array, offered raw and through a download service."""
    data = np.resize(np.arange(256, dtype=np.uint8), nbytes)
    service = DownloadService(site="bench", chunk_bytes=chunk_bytes)
    listener = socket.create_server(("127.0.0.1", 0))
    threading.Thread(
        target=_serve_raw,
        args=(listener, data.data, chunk_bytes),
        name="raw-sender",
        daemon=True,
    ).start()
    host, port = listener.getsockname()[:2]
    print(json.dumps({"raw": [host, port]}), flush=True)
    for number, line in enumerate(sys.stdin, start=1):
        if line.strip() == "publish":
            [ref] = service.publish({"model": data}, round=number)
            print(json.dumps(ref.to_json()), flush=True)
    service.close()


def _serve_raw(listener: socket.socket, data: memoryview, chunk_bytes: int) -> None:
    while True:
        sock, _ = listener.accept()
        with sock:
            for start in range(0, data.nbytes, chunk_bytes):
                sock.sendall(data[start : start + chunk_bytes])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("nbytes", type=int)
    parser.add_argument("chunk_bytes", type=int)
    args = parser.parse_args()
    serve(args.nbytes, args.chunk_bytes)


if __name__ == "__main__":
    main()
