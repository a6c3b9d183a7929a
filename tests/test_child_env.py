"""Isolation: nothing of the parent-to-child protocol leaks in from the user's shell.

The launcher sets every variable of :data:`reference_impl.child_env.PROTOCOL`
explicitly, so ``FLRELIA_FAILPOINTS`` or ``FLRELIA_SCRIPT_BEHAVIOUR`` left in a
shell never fires inside a fault-free scenario.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import pkgutil
import sys
import threading
from pathlib import Path

import pytest

import reference_impl
from pytest_flrelia.contract.failpoints import FAILPOINTS_ENV
from pytest_flrelia.contract.job import JobConfig, TensorSpec, Timeouts
from pytest_flrelia.contract.timeline import EventKind, Timeline
from pytest_flrelia.targets.reference import ReferenceTarget
from pytest_flrelia.targets.reference.faults import FaultPlan
from reference_impl.child_env import NAMES, PROTOCOL, child_environment
from reference_impl.launcher import SubprocessLauncher
from reference_impl.train_script import BEHAVIOUR_ENV

ROOT = Path(__file__).resolve().parent.parent
SHELL_FAULTS = {FAILPOINTS_ENV: "agent.before_init=exit(3)", BEHAVIOUR_ENV: "spawn_child"}
"""What a user may have left in the shell: each would break or change a fault-free run."""
PLUGIN_ARGS = ("-p", "no:flrelia", "-p", "pytest_flrelia.plugin")
QUIET_ARGS = ("-p", "no:hypothesispytest", "-p", "no:faker", "-p", "no:cacheprovider")
INNER_TIMEOUT = 120.0
EXIT_WAIT = 20.0

DUMP_ENV = """\
import json, sys, os
with open(sys.argv[1], "w") as out:
    json.dump(dict(os.environ), out)
"""


def _reference_modules() -> list[str]:
    return [
        f"reference_impl.{info.name}"
        for info in pkgutil.iter_modules(reference_impl.__path__)
        if info.name != "__main__"
    ]


def test_the_protocol_lists_every_variable_constant_of_the_runtime() -> None:
    declared = set()
    for name in _reference_modules():
        module = importlib.import_module(name)
        declared |= {
            value
            for attribute, value in vars(module).items()
            if attribute.endswith("_ENV") and isinstance(value, str)
        }
    assert declared == NAMES
    assert len(PROTOCOL) == len(NAMES), "a variable is listed twice"
    assert all(variable.meaning for variable in PROTOCOL)


def _environment_reads(tree: ast.AST) -> list[ast.expr]:
    """The key of every ``os.environ[...]``, ``os.environ.get(...)`` and ``env.get(...)``."""
    keys: list[ast.expr] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ":
            keys.append(node.slice)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and ast.unparse(node.func.value) in ("os.environ", "env", "environ")
            and node.args
        ):
            keys.append(node.args[0])
    return keys


def test_the_runtime_reads_the_environment_only_through_the_protocol_names() -> None:
    package = Path(reference_impl.__file__).parent
    reads = []
    for path in sorted(package.glob("*.py")):
        for key in _environment_reads(ast.parse(path.read_text(), str(path))):
            reads.append((path.name, ast.unparse(key)))
    assert reads, "found no environment read at all: the scan is broken"
    constants = {
        attribute
        for name in _reference_modules()
        for attribute, value in vars(importlib.import_module(name)).items()
        if isinstance(value, str) and value in NAMES
    }
    unknown = [(file, key) for file, key in reads if key not in constants]
    assert not unknown, f"environment reads outside the protocol: {unknown}"


def test_child_environment_blanks_every_inherited_protocol_variable() -> None:
    inherited = {name: "from-the-shell" for name in NAMES} | {"PATH": "/bin"}
    env = child_environment(inherited, {BEHAVIOUR_ENV: "ignore_sigterm"})
    assert env["PATH"] == "/bin"
    assert env[BEHAVIOUR_ENV] == "ignore_sigterm"
    assert {name: env[name] for name in NAMES - {BEHAVIOUR_ENV}} == dict.fromkeys(
        NAMES - {BEHAVIOUR_ENV}, ""
    )


def test_a_launched_child_sees_every_protocol_variable_and_none_from_the_shell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in NAMES:
        monkeypatch.setenv(name, "from-the-shell")
    monkeypatch.setenv("FLRELIA_TEST_UNRELATED", "kept")
    dump = tmp_path / "env.json"
    launcher = SubprocessLauncher(
        [sys.executable, "-c", DUMP_ENV, str(dump)], launch_once=True, name="dump"
    )
    try:
        assert launcher.launch_task("dump", {FAILPOINTS_ENV: "x=off"})
        assert launcher.wait_for_exit(EXIT_WAIT)
    finally:
        launcher.stop_task()
    seen = json.loads(dump.read_text())
    assert seen["FLRELIA_TEST_UNRELATED"] == "kept"
    assert seen[FAILPOINTS_ENV] == "x=off"
    assert {name: seen.get(name) for name in NAMES - {FAILPOINTS_ENV}} == dict.fromkeys(
        NAMES - {FAILPOINTS_ENV}, ""
    )


def test_failpoints_and_behaviours_in_the_shell_do_not_reach_a_fault_free_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in SHELL_FAULTS.items():
        monkeypatch.setenv(name, value)
    job = JobConfig(
        sites=1, rounds=2, tensors=TensorSpec(count=1, size_bytes=4096), timeouts=Timeouts.fast()
    )
    timeline = Timeline("harness")
    result = ReferenceTarget().run_plan(
        job, FaultPlan(), known_bug=None, timeline=timeline, abort=threading.Event(), env={}
    )
    assert result.ok, (result.error, result.site_errors)
    assert not timeline.events(EventKind.FAILPOINT)
    assert len(result.launched_pids) == 2


def test_a_scenario_session_ignores_failpoints_left_in_the_shell(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    for name, value in SHELL_FAULTS.items():
        monkeypatch.setenv(name, value)
    pytester.makefile(
        ".scenario.yaml",
        quiet="name: quiet\njob: {rounds: 2, tensors: {count: 1, size: 16KiB}}\n"
        "expect: {within: 20s}\n",
    )
    result = pytester.runpytest_subprocess(
        *PLUGIN_ARGS, *QUIET_ARGS, "-rpf", timeout=INNER_TIMEOUT
    )
    assert result.ret == 0, result.stdout.str()
    result.assert_outcomes(passed=1)
