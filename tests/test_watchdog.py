"""When the client dies abruptly, its training processes end themselves (SPEC §5 no orphans)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from _reaper import Reaper

from pytest_flrelia.contract.processes import wait_gone

SCRIPT = Path(__file__).parent / "scripts" / "doomed_client.py"
GUARDED = Path(__file__).parent / "scripts" / "guarded_worker.py"
BOUND = 10.0
CLIENT = """\
import subprocess, sys
guarded = subprocess.Popen([sys.executable, sys.argv[1]], start_new_session=True)
print(f"guarded pid {guarded.pid}", flush=True)
guarded.wait()
"""
"""A client stand-in: starts the guarded process (which shares its stdin and stdout), waits."""


def alive(processes: list[psutil.Process]) -> list[int]:
    return [p.pid for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_training_processes_end_when_the_client_dies(
    how: signal.Signals, reaper: Reaper, tmp_path: Path
) -> None:
    # A client killed by a signal cannot remove its job's flrelia-job-* directory: make
    # it there, under this test's own temporary directory, not in the machine's /tmp.
    client = subprocess.Popen(
        [sys.executable, str(SCRIPT)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    reaper.watch(client)
    try:
        assert client.stdout is not None
        line = client.stdout.readline()
        assert line.startswith("training pid "), line
        training = psutil.Process(int(line.split()[-1]))
        reaper.watch(training)
        deadline = time.monotonic() + BOUND
        family: list[psutil.Process] = []
        while time.monotonic() < deadline and not family:  # the worker child appears
            family = training.children(recursive=True)
            psutil.wait_procs([training], timeout=0.05)
        reaper.watch(*family)
        assert family, "the training script never started its worker child"
        client.send_signal(how)
        client.wait(BOUND)
        gone, still = psutil.wait_procs([training, *family], timeout=BOUND)
        assert alive(still) == [], f"outlived their client: {alive(still)}"
        assert len(gone) == 1 + len(family)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()


@pytest.mark.parametrize("client_dies", [True, False], ids=["client-dead", "client-alive"])
def test_a_process_ending_after_its_client_died_takes_its_group_along(
    client_dies: bool, reaper: Reaper
) -> None:
    """The gap the watchdog thread leaves: the process ends (here by end of input) before
    the thread's next check.  Only a dead client makes the way out kill the group."""
    client = subprocess.Popen(
        [sys.executable, "-c", CLIENT, str(GUARDED)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    reaper.watch(client)
    assert client.stdin is not None and client.stdout is not None
    worker: psutil.Process | None = None
    try:
        guarded = psutil.Process(int(client.stdout.readline().split()[-1]))
        reaper.watch(guarded)
        worker = psutil.Process(int(client.stdout.readline().split()[-1]))
        reaper.watch(worker)
        if client_dies:
            client.kill()
            client.wait(BOUND)  # reaped: the guarded process has a new parent now
            client.stdin.close()  # end of input: the guarded process raises
        else:
            client.stdin.write("done\n")
            client.stdin.close()
            client.wait(BOUND)  # the guarded process ended normally
        # wait_gone, not psutil.wait_procs: an orphan's zombie counts as gone at once,
        # while pid 1 of a container may take seconds to reap it.
        assert wait_gone([guarded], BOUND) == [], "the guarded process did not end"
        if client_dies:
            assert wait_gone([worker], BOUND) == [], "the worker outlived its dead client"
        else:
            assert alive([worker]) == [worker.pid], "a live client's worker was killed"
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
        if worker is not None and alive([worker]):
            worker.kill()
            wait_gone([worker], BOUND)
