"""When the client dies abruptly, its training processes end themselves (SPEC §5 no orphans)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

SCRIPT = Path(__file__).parent / "scripts" / "doomed_client.py"
BOUND = 10.0


def alive(processes: list[psutil.Process]) -> list[int]:
    return [p.pid for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_training_processes_end_when_the_client_dies(how: signal.Signals) -> None:
    client = subprocess.Popen(
        [sys.executable, str(SCRIPT)], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert client.stdout is not None
        line = client.stdout.readline()
        assert line.startswith("training pid "), line
        training = psutil.Process(int(line.split()[-1]))
        deadline = time.monotonic() + BOUND
        family: list[psutil.Process] = []
        while time.monotonic() < deadline and not family:  # the worker child appears
            family = training.children(recursive=True)
            psutil.wait_procs([training], timeout=0.05)
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
