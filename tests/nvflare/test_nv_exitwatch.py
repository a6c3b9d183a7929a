"""The exit watcher sees a real child die, at the moment it dies, and leaves it unreaped."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import pytest

from pytest_flrelia.targets.nvflare import exitwatch

WAIT = 10.0


def _watch(child: subprocess.Popen[bytes]) -> tuple[threading.Event, list[exitwatch.Death]]:
    died = threading.Event()
    deaths: list[exitwatch.Death] = []

    def on_death(death: exitwatch.Death) -> None:
        deaths.append(death)
        died.set()

    exitwatch.watch(child.pid, on_death, lambda: child.returncode)
    return died, deaths


@pytest.mark.usefixtures("no_leftover_children")
def test_an_exit_is_seen_with_its_code_and_the_child_is_left_for_its_owner() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read(); sys.exit(3)"],
                             stdin=subprocess.PIPE)
    died, deaths = _watch(child)
    assert not died.wait(0.3), "seen dead while it was alive"
    before = time.monotonic()
    assert child.stdin is not None
    child.stdin.close()
    assert died.wait(WAIT)
    (death,) = deaths
    assert death.pid == child.pid and death.returncode == 3 and death.signal_name is None
    assert death.ts >= before
    # not reaped: its owner still gets the status
    assert child.wait(WAIT) == 3


@pytest.mark.usefixtures("no_leftover_children")
def test_a_kill_is_seen_as_the_signal() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    died, deaths = _watch(child)
    child.send_signal(signal.SIGTERM)
    assert died.wait(WAIT)
    assert deaths[0].returncode == -signal.SIGTERM and deaths[0].signal_name == "SIGTERM"
    child.wait(WAIT)


@pytest.mark.usefixtures("no_leftover_children")
def test_a_child_reaped_first_by_its_owner_gives_the_owners_status() -> None:
    child = subprocess.Popen([sys.executable, "-c", "raise SystemExit(5)"])
    assert child.wait(WAIT) == 5
    died, deaths = _watch(child)
    assert died.wait(WAIT)
    assert deaths[0].returncode == 5
