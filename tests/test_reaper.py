"""A test that fails leaves no process behind: the ``reaper`` fixture kills what it was shown."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from pytest_flrelia.contract.processes import wait_gone
from pytest_flrelia.harness.processes import live_processes_where

TESTS = Path(__file__).resolve().parent
MARK_ENV = "FLRELIA_TEST_MARK"
INNER_TIMEOUT = 60.0
GONE_WAIT = 10.0

FAILING_TEST = """\
import subprocess, sys

import psutil

TREE = '''
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
print("started", flush=True)
time.sleep(600)
'''


def test_fails_with_a_process_tree(reaper):
    client = subprocess.Popen(
        [sys.executable, "-c", TREE], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    reaper.watch(client)
    assert client.stdout.readline() == "started\\n"
    reaper.watch(*psutil.Process(client.pid).children(recursive=True))
    assert False, "this test fails on purpose"
"""


def test_a_failing_test_leaves_no_process_behind(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    mark = uuid.uuid4().hex
    monkeypatch.setenv(MARK_ENV, mark)
    path = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    monkeypatch.setenv("PYTHONPATH", path)
    pytester.makeconftest((TESTS / "conftest.py").read_text())
    pytester.makepyfile(test_inner=FAILING_TEST)

    result = pytester.runpytest_subprocess(
        "-p", "no:randomly", "-p", "no:cacheprovider", timeout=INNER_TIMEOUT
    )

    result.assert_outcomes(failed=1)
    left = live_processes_where(lambda env: env.get(MARK_ENV) == mark)
    assert wait_gone(left, GONE_WAIT) == [], [" ".join(p.cmdline()) for p in left]
