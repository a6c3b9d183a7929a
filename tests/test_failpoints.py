"""The failpoint engine: grammar, semantics of every action, determinism, subprocess wiring."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType, ModuleType
from typing import NoReturn

import pytest

from pytest_flrelia.contract import failpoints, seams
from pytest_flrelia.contract.failpoints import FailpointSyntaxError, failpoint
from pytest_flrelia.contract.timeline import EventKind, Timeline

REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).resolve().parent / "scripts_failpoints" / "pass_failpoint.py"
SUBPROCESS_TIMEOUT = 30.0
WAIT = 5.0  # upper bound for every event wait; tests normally wake far sooner


@pytest.fixture(autouse=True)
def engine() -> Iterator[None]:
    """Every test starts and ends with no failpoint, no recorder and no hung call."""
    failpoints.clear()
    failpoints.set_recorder(None)
    yield
    failpoints.set_recorder(None)
    failpoints.clear()


Hit = tuple[str, str, str | None, int | None]


@pytest.fixture
def recorded() -> list[Hit]:
    hits: list[Hit] = []
    failpoints.set_recorder(lambda name, action, site, round, tag: hits.append(
        (name, action, site, round)))
    return hits


def fired_pattern(calls: int, name: str = "x") -> list[int]:
    """The 0-based calls at which ``name`` ran an action."""
    fired = []
    for call in range(calls):
        before = failpoints.hits(name)
        failpoint(name)
        if failpoints.hits(name) > before:
            fired.append(call)
    return fired


# ---------------------------------------------------------------- grammar: valid


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("x=off", {"x": "off"}),
        ("x=sleep(5)", {"x": "sleep(5)"}),
        ("x=hang", {"x": "hang"}),
        ("x=raise(RuntimeError)", {"x": "raise(RuntimeError)"}),
        ("x=raise(OSError, disk full)", {"x": "raise(OSError, disk full)"}),
        ("x=raise(ConnectionError, 'peer, gone')", {"x": "raise(ConnectionError, peer, gone)"}),
        ("x=exit(7)", {"x": "exit(7)"}),
        ("x=signal(SIGTERM)", {"x": "signal(SIGTERM)"}),
        ("x=signal(usr1)", {"x": "signal(SIGUSR1)"}),
        ("x=3*sleep(1)", {"x": "3*sleep(1)"}),
        ("x=50%hang", {"x": "50%hang"}),
        ("x=12.50%2*exit(1)", {"x": "12.5%2*exit(1)"}),
        ("x=0.000001%off; y=050%off; z=100.0%off", {"x": "0.000001%off", "y": "50%off",
                                                  "z": "100%off"}),
        ("x=1*off->2*sleep(1)->raise(ValueError)", {"x": "1*off->2*sleep(1)->raise(ValueError)"}),
        ("agent.after_result_sent[site=site-1,round=2]=exit(0)",
         {"agent.after_result_sent[site=site-1,round=2]": "exit(0)"}),
        ("x[round=2, site=site-1]=off", {"x[site=site-1,round=2]": "off"}),
        ("x[site=a]=off; x[round=1]=hang; x=sleep(1)",
         {"x[site=a]": "off", "x[round=1]": "hang", "x": "sleep(1)"}),
        ("\n a = 50 % 2 * sleep( 10 ) -> off ;\tb=exit( 3 ) ; ;",
         {"a": "50%2*sleep(10)->off", "b": "exit(3)"}),
        ("", {}),
        (" ; ", {}),
    ],
)
def test_valid_spec_is_configured_in_canonical_form(spec: str, expected: dict[str, str]) -> None:
    failpoints.configure(spec)
    assert failpoints.configured() == expected


def test_canonical_form_configures_the_same_thing() -> None:
    failpoints.configure("x[site=s]= 2 * raise(OSError, 'a b') ; y = 5%sleep(3)->off")
    first = failpoints.configured()
    failpoints.configure(";".join(f"{key}={value}" for key, value in first.items()))
    assert failpoints.configured() == first


# ---------------------------------------------------------------- grammar: invalid

INVALID = [
    # (spec, position, start of the problem)
    ("agent.y=sleep(10); agent.x=slep(5)", 27, "bad action 'slep(5)'"),
    ("x=", 2, "missing action"),
    ("x=sleep(1)->", 12, "missing action"),
    ("x=sleep(1)->  ->off", 14, "missing action"),
    ("1x=off", 0, "bad name '1x'"),
    ("x", 1, "missing '=' after 'x'"),
    ("a=off; x hang", 9, "missing '=' after 'x'"),
    ("x[site=a=off", 1, "unclosed '['"),
    ("x[sit=a]=off", 2, "unknown scope key 'sit'"),
    ("x[round= two]=off", 9, "bad round 'two'"),
    ("x[site=a, site=b]=off", 10, "duplicate scope key 'site'"),
    ("x[]=off", 2, "empty scope"),
    ("x[site=]=off", 7, "empty value for scope key 'site'"),
    ("x[site]=off", 2, "bad scope item 'site'"),
    ("x=150%off", 2, "probability '150%' out of range"),
    ("x=0*off", 2, "count '0*' must be at least 1"),
    ("x=50%0*off", 5, "count '0*' must be at least 1"),
    ("x=2*50%off", 4, "bad action '50%off'"),
    ("x=sleep", 7, "'sleep' needs an argument"),
    ("x=sleep()", 8, "'sleep' needs an argument"),
    ("x=sleep(a)", 8, "bad argument 'a' for sleep(ms)"),
    ("x=sleep(-5)", 8, "bad argument '-5' for sleep(ms)"),
    ("x=sleep(5", 9, "missing ')' in 'sleep(5'"),
    ("x=sleep(5)y", 10, "unexpected 'y' after 'sleep(5)'"),
    ("x=sleep 5", 2, "bad action 'sleep 5'"),
    ("x=hang(1)", 7, "'hang' takes no argument"),
    ("x=off()", 6, "'off' takes no argument"),
    ("x=raise(Foo)", 8, "unknown exception 'Foo'"),
    ("x=raise(print)", 8, "unknown exception 'print'"),
    ("x=raise(os.error)", 8, "unknown exception 'os.error'"),
    ("x=raise(UnicodeDecodeError)", 8, "exception 'UnicodeDecodeError' cannot be raised"),
    ("x=exit(256)", 7, "bad exit code '256'"),
    ("x=exit(one)", 7, "bad exit code 'one'"),
    ("x=signal(SIGFOO)", 9, "unknown signal 'SIGFOO'"),
    ("x=panic", 2, "bad action 'panic'"),
    ("x=off;x=hang", 6, "duplicate entry for 'x'"),
    ("x=off; x[site=s]=hang", 7, "entry 'x[site=s]' can never fire"),
    ("x[round=1]=off; x[site=s,round=1]=hang", 16, "entry 'x[site=s,round=1]' can never fire"),
    ("  a . b=off", 4, "missing '=' after 'a'"),
    ("x@crash=off", 2, "bad tag"),
    ("x[site=s] @ =off", 12, "bad tag"),
]


@pytest.mark.parametrize(("spec", "position", "problem"), INVALID,
                         ids=[spec for spec, _, _ in INVALID])
def test_invalid_spec_reports_the_position_in_the_whole_string(
        spec: str, position: int, problem: str) -> None:
    with pytest.raises(FailpointSyntaxError) as caught:
        failpoints.configure(spec)
    error = caught.value
    assert isinstance(error, ValueError)
    assert error.position == position
    assert str(error).startswith(f"{problem}")
    assert f" at position {position} in entry '{error.entry}'" in str(error)
    assert error.entry in spec
    lines = str(error).splitlines()
    assert lines[-1] == "  " + " " * position + "^"
    assert failpoints.configured() == {}


def test_syntax_error_message_names_entry_position_and_valid_actions() -> None:
    with pytest.raises(FailpointSyntaxError) as caught:
        failpoints.configure("agent.y=sleep(10); agent.x=slep(5)")
    assert str(caught.value) == (
        "bad action 'slep(5)' at position 27 in entry 'agent.x=slep(5)'; valid actions: "
        "off, sleep(ms), hang, raise(Exc), exit(code), signal(NAME), return, call(NAME)\n"
        "  agent.y=sleep(10); agent.x=slep(5)\n"
        "                             ^"
    )


def test_invalid_configure_keeps_the_previous_configuration() -> None:
    failpoints.configure("x=raise(RuntimeError)")
    with pytest.raises(FailpointSyntaxError):
        failpoints.configure("x=off; y=nonsense")
    assert failpoints.configured() == {"x": "raise(RuntimeError)"}
    with pytest.raises(RuntimeError):
        failpoint("x")


def test_validate_checks_without_configuring() -> None:
    failpoints.validate("x=exit(1)")
    assert failpoints.configured() == {}
    with pytest.raises(FailpointSyntaxError, match=r"^SOURCE: bad action"):
        failpoints.validate("x=boom", source="SOURCE")


# ---------------------------------------------------------------- actions


def test_unconfigured_failpoint_does_nothing(recorded: list[Hit]) -> None:
    failpoint("x", site="site-1", round=1)
    failpoints.configure("y=raise(RuntimeError)")
    failpoint("x")
    assert failpoints.hits("x") == 0
    assert recorded == []


def test_off_runs_nothing_and_is_not_a_hit(recorded: list[Hit]) -> None:
    failpoints.configure("x=off")
    failpoint("x")
    assert failpoints.hits("x") == 0
    assert recorded == []


def test_raise_raises_the_named_builtin_exception_with_its_message() -> None:
    failpoints.configure("x=raise(ConnectionError, peer gone); y=raise(OSError)")
    with pytest.raises(ConnectionError, match=r"^peer gone$"):
        failpoint("x")
    with pytest.raises(OSError, match=r"^failpoint y fired$") as caught:
        failpoint("y")
    assert type(caught.value) is OSError


def test_sleep_sleeps_at_least_the_time() -> None:
    failpoints.configure("x=sleep(50)")
    start = time.monotonic()
    failpoint("x")
    elapsed = time.monotonic() - start
    assert 0.050 <= elapsed < 5.0


class _ExitRequestedError(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def test_exit_goes_through_the_exit_seam(monkeypatch: pytest.MonkeyPatch,
                                         recorded: list[Hit]) -> None:
    def fake_exit(code: int) -> NoReturn:
        raise _ExitRequestedError(code)

    monkeypatch.setattr(seams, "exit_process", fake_exit)
    failpoints.configure("agent.before_exit=exit(7)")
    with pytest.raises(_ExitRequestedError) as caught:
        failpoint("agent.before_exit", site="site-1", round=3)
    assert caught.value.code == 7
    assert recorded == [("agent.before_exit", "exit(7)", "site-1", 3)]  # recorded before exit


def test_a_signal_ignored_by_whatever_started_the_process_still_kills_it() -> None:
    """Under ``nohup`` every child starts with SIGHUP ignored: a ``signal(SIGHUP)`` fault
    must still end the process (it did nothing before, and a correct run failed)."""
    code = (  # configured at start-up, struck from another thread (a download service's)
        "import threading\n"
        "from pytest_flrelia.contract import failpoints\n"
        "failpoints.configure('x=signal(SIGHUP)')\n"
        "strike = threading.Thread(target=failpoints.failpoint, args=('x',))\n"
        "strike.start(); strike.join()\n"
        "raise SystemExit(0)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),  # what nohup does
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert done.returncode == -signal.SIGHUP, (done.returncode, done.stderr)


def test_signal_is_delivered_to_the_current_process(monkeypatch: pytest.MonkeyPatch) -> None:
    delivered = threading.Event()
    sent: list[tuple[int, int]] = []
    real_kill = seams.kill

    def spy_kill(pid: int, sig: int) -> None:
        sent.append((pid, sig))
        real_kill(pid, sig)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        delivered.set()

    monkeypatch.setattr(seams, "kill", spy_kill)
    previous = signal.signal(signal.SIGUSR1, on_signal)
    try:
        failpoints.configure("x=signal(SIGUSR1)")
        failpoint("x")
        assert delivered.wait(WAIT)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert sent == [(os.getpid(), signal.SIGUSR1)]


def _hang_in_thread(name: str, hung: threading.Event) -> tuple[threading.Thread, threading.Event]:
    """Start a thread that passes ``name``; ``hung`` is set by the recorder at the hit."""
    done = threading.Event()
    failpoints.set_recorder(lambda *hit: hung.set())

    def run() -> None:
        failpoint(name)
        done.set()

    thread = threading.Thread(target=run, name=f"failpoint-test-{name}")
    thread.start()
    return thread, done


def test_hang_blocks_until_released() -> None:
    failpoints.configure("x=hang; other=hang")
    hung = threading.Event()
    thread, done = _hang_in_thread("x", hung)
    assert hung.wait(WAIT)
    assert not done.wait(0.05), "hang returned before it was released"
    failpoints.release("other")
    assert not done.wait(0.05), "releasing another name woke the hung call"
    failpoints.release("x")
    thread.join(WAIT)
    assert done.is_set()
    assert not thread.is_alive()


def test_a_hit_after_release_hangs_again_and_clear_releases_it() -> None:
    failpoints.configure("x=hang")
    for _ in range(2):
        hung = threading.Event()
        thread, done = _hang_in_thread("x", hung)
        assert hung.wait(WAIT)
        assert not done.wait(0.05)
        failpoints.release()
        thread.join(WAIT)
        assert done.is_set()
    hung = threading.Event()
    thread, done = _hang_in_thread("x", hung)
    assert hung.wait(WAIT)
    failpoints.clear()
    thread.join(WAIT)
    assert done.is_set()


# ---------------------------------------------------------------- counts, chains, probability


def test_counted_tasks_are_consumed_in_order_then_the_failpoint_is_off(
        recorded: list[Hit]) -> None:
    failpoints.configure("x=2*sleep(0)->3*off->1*raise(OSError, third)")
    outcomes = []
    for _ in range(8):
        try:
            failpoint("x")
            outcomes.append("pass")
        except OSError as error:
            outcomes.append(str(error))
    assert outcomes == ["pass"] * 5 + ["third"] + ["pass"] * 2
    assert [hit[1] for hit in recorded] == ["sleep(0)", "sleep(0)", "raise(OSError, third)"]
    assert failpoints.hits("x") == 3


def test_an_uncounted_task_applies_forever() -> None:
    failpoints.configure("x=1*sleep(0)->raise(RuntimeError)")
    failpoint("x")
    for _ in range(5):
        with pytest.raises(RuntimeError):
            failpoint("x")
    assert failpoints.hits("x") == 6


def test_probability_is_deterministic_under_a_seed() -> None:
    failpoints.configure("x=50%sleep(0)", seed=1)
    first = fired_pattern(200)
    failpoints.configure("x=50%sleep(0)", seed=1)
    assert fired_pattern(200) == first
    failpoints.configure("x=50%sleep(0)", seed=2)
    assert fired_pattern(200) != first
    assert 60 <= len(first) <= 140


def test_probability_bounds_never_and_always() -> None:
    failpoints.configure("x=0%sleep(0); y=100%sleep(0)")
    assert fired_pattern(50, "x") == []
    assert fired_pattern(50, "y") == list(range(50))


def test_a_probability_miss_does_not_consume_the_count() -> None:
    failpoints.configure("x=30%3*sleep(0)", seed=5)
    fired = fired_pattern(200)
    assert len(fired) == 3
    assert fired[-1] > 2  # some calls missed before the count ran out


def test_a_probability_miss_falls_through_to_the_next_task() -> None:
    failpoints.configure("x=50%raise(ValueError)->raise(KeyError)", seed=3)
    raised: set[type[BaseException]] = set()
    for _ in range(100):
        with pytest.raises((ValueError, KeyError)) as caught:
            failpoint("x")
        raised.add(caught.type)
    assert raised == {ValueError, KeyError}


def test_counts_are_exact_under_concurrent_callers() -> None:
    failpoints.configure("x=1000*sleep(0)")
    barrier = threading.Barrier(4, timeout=WAIT)

    def hammer() -> None:
        barrier.wait()
        for _ in range(500):
            failpoint("x")

    threads = [threading.Thread(target=hammer, name=f"failpoint-hammer-{i}") for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT * 4)
    assert not any(thread.is_alive() for thread in threads)
    assert failpoints.hits("x") == 1000


# ---------------------------------------------------------------- scopes and recorder


def test_scoped_entries_fire_only_for_matching_site_and_round() -> None:
    failpoints.configure(
        "x[site=site-1]=raise(RuntimeError, site-1); x[round=2]=raise(ValueError, round-2);"
        "x[site=site-2,round=3]=raise(OSError, both)"
    )
    with pytest.raises(RuntimeError):
        failpoint("x", site="site-1", round=7)
    with pytest.raises(RuntimeError):  # first matching entry wins
        failpoint("x", site="site-1", round=2)
    with pytest.raises(ValueError):
        failpoint("x", site="site-2", round=2)
    with pytest.raises(OSError, match="both"):
        failpoint("x", site="site-2", round=3)
    failpoint("x", site="site-2", round=1)
    failpoint("x", site="site-3", round=3)
    failpoint("x")
    assert failpoints.hits("x") == 4


def test_recorder_hears_every_hit_with_name_action_site_and_round(
        recorded: list[Hit]) -> None:
    failpoints.configure("a[site=s1]=2*sleep(0)->off; b=sleep(1)")
    failpoint("a", site="s1", round=1)
    failpoint("a", site="s2", round=1)
    failpoint("a", site="s1", round=2)
    failpoint("a", site="s1", round=3)
    failpoint("b")
    assert recorded == [("a", "sleep(0)", "s1", 1), ("a", "sleep(0)", "s1", 2),
                        ("b", "sleep(1)", None, None)]


def test_a_tagged_entry_tells_the_recorder_the_fault_it_injects() -> None:
    heard: list[tuple[object, ...]] = []
    failpoints.set_recorder(lambda *hit: heard.append(hit))
    failpoints.configure("x[site=s1]@crash#3=return; y=return")
    failpoint("x", site="s1", round=1)
    failpoint("y")
    assert heard == [("x", "return", "s1", 1, "crash#3"), ("y", "return", None, None, None)]
    shown = failpoints.configured()
    assert shown == {"x[site=s1]@crash#3": "return", "y": "return"}
    failpoints.configure(";".join(f"{key}={value}" for key, value in shown.items()))
    assert failpoints.configured() == shown


def test_timeline_recorder_records_a_tagged_hit_as_its_fault_acting() -> None:
    timeline = Timeline("harness")
    failpoints.set_recorder(failpoints.timeline_recorder(timeline))
    failpoints.configure("x[round=2]@slow_stop#1=sleep(0); y=sleep(0)")
    failpoint("x", site="s1", round=1)  # out of scope: nothing acts
    failpoint("x", site="s1", round=2)
    failpoint("y")
    [fault] = timeline.events(EventKind.FAULT)
    assert (fault.site, fault.round, dict(fault.detail)) == (
        "s1", 2, {"fault": "slow_stop", "fault_id": 1, "failpoint": "x", "did": "sleep(0)"})
    [plain] = timeline.events(EventKind.FAILPOINT)
    assert dict(plain.detail) == {"name": "y", "action": "sleep(0)"}


def test_a_failing_recorder_is_logged_and_the_action_still_runs(
        caplog: pytest.LogCaptureFixture) -> None:
    def broken(name: str, action: str, site: str | None, round: int | None,
               tag: str | None) -> None:
        raise LookupError("timeline closed")

    failpoints.set_recorder(broken)
    failpoints.configure("x=raise(RuntimeError, fired)")
    with caplog.at_level(logging.ERROR, logger="pytest_flrelia.contract.failpoints"), \
            pytest.raises(RuntimeError, match="fired"):
        failpoint("x")
    assert "failpoint recorder failed on x" in caplog.text


# ---------------------------------------------------------------- configuration API


def test_configure_replaces_and_resets_counts() -> None:
    failpoints.configure("x=1*raise(RuntimeError); y=off")
    with pytest.raises(RuntimeError):
        failpoint("x")
    failpoint("x")
    failpoints.configure("x=1*raise(RuntimeError)")
    assert failpoints.configured() == {"x": "1*raise(RuntimeError)"}
    assert failpoints.hits("x") == 0
    with pytest.raises(RuntimeError):
        failpoint("x")


def test_add_appends_and_replaces_entries_with_the_same_scope() -> None:
    failpoints.configure("x[site=s]=off; y=off")
    failpoints.add("x=hang; y=exit(1)")
    assert failpoints.configured() == {"x[site=s]": "off", "x": "hang", "y": "exit(1)"}


def test_add_refuses_an_entry_an_existing_one_shadows() -> None:
    failpoints.configure("x=off")
    with pytest.raises(FailpointSyntaxError, match=r"can never fire at position 7") as caught:
        failpoints.add("y=off; x[round=2]=hang")
    assert "the configured entry 'x' matches every call first" in str(caught.value)
    assert failpoints.configured() == {"x": "off"}


def test_scoped_configures_for_the_block_and_clears_after_it() -> None:
    with pytest.raises(KeyError), failpoints.scoped("x=raise(KeyError)", seed=4):
        assert failpoints.configured() == {"x": "raise(KeyError)"}
        failpoint("x")
    assert failpoints.configured() == {}
    failpoint("x")


def test_configure_from_environment_reads_spec_and_seed() -> None:
    environ = {failpoints.FAILPOINTS_ENV: "x=50%sleep(0)", failpoints.FAILPOINTS_SEED_ENV: "9"}
    assert failpoints.configure_from_environment(environ)
    from_env = fired_pattern(100)
    failpoints.configure("x=50%sleep(0)", seed=9)
    assert fired_pattern(100) == from_env


def test_configure_from_environment_without_the_variable_changes_nothing() -> None:
    failpoints.configure("x=off")
    assert not failpoints.configure_from_environment({})
    assert not failpoints.configure_from_environment({failpoints.FAILPOINTS_ENV: "  "})
    assert failpoints.configured() == {"x": "off"}


def test_configure_from_environment_names_the_variable_in_errors() -> None:
    with pytest.raises(FailpointSyntaxError, match=r"^FLRELIA_FAILPOINTS: bad action 'nope'"):
        failpoints.configure_from_environment({failpoints.FAILPOINTS_ENV: "x=nope"})
    with pytest.raises(ValueError, match=r"FLRELIA_FAILPOINTS_SEED='abc' is not an integer"):
        failpoints.configure_from_environment(
            {failpoints.FAILPOINTS_ENV: "x=off", failpoints.FAILPOINTS_SEED_ENV: "abc"})


# ---------------------------------------------------------------- real subprocesses


def run_script(spec: str | None, *args: str, seed: int | None = None,
               ) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items()
           if key not in (failpoints.FAILPOINTS_ENV, failpoints.FAILPOINTS_SEED_ENV)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    if spec is not None:
        env[failpoints.FAILPOINTS_ENV] = spec
    if seed is not None:
        env[failpoints.FAILPOINTS_SEED_ENV] = str(seed)
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=env, capture_output=True,
                          text=True, timeout=SUBPROCESS_TIMEOUT, check=False)


def test_exit_failpoint_from_the_environment_ends_a_real_subprocess() -> None:
    result = run_script("x=exit(7)")
    assert result.returncode == 7, result.stderr
    assert result.stdout == ""


def test_raise_failpoint_from_the_environment_fails_a_real_subprocess() -> None:
    result = run_script(" x = raise(RuntimeError) ")
    assert result.returncode == 1
    assert "RuntimeError: failpoint x fired" in result.stderr


def test_importing_the_module_does_not_configure_from_the_environment() -> None:
    result = run_script("x=exit(7)", "--skip-configure")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"configured": False, "fired": []}


def test_seeded_probability_matches_between_processes() -> None:
    first = run_script("x=50%sleep(0)", "--calls", "64", seed=11)
    second = run_script("x=50%sleep(0)", "--calls", "64", seed=11)
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    failpoints.configure("x=50%sleep(0)", seed=11)
    expected = {"configured": True, "fired": fired_pattern(64)}
    assert json.loads(first.stdout) == json.loads(second.stdout) == expected


# ---------------------------------------------------------------- cost when unconfigured


def _load_bench() -> ModuleType:
    path = REPO / "benchmarks" / "failpoint_bench.py"
    spec = importlib.util.spec_from_file_location("failpoint_bench", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_an_unconfigured_failpoint_costs_well_under_a_microsecond() -> None:
    cost = _load_bench().measure_failpoint_off_ns(number=20_000, repeat=5)
    assert 0.0 < cost < 1000.0


def test_the_benchmark_refuses_to_measure_a_configured_engine() -> None:
    failpoints.configure("x=off")
    with pytest.raises(RuntimeError, match="clear"):
        _load_bench().measure_failpoint_off_ns(number=10, repeat=1)


def test_the_benchmark_prints_its_figure() -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "failpoint_bench.py")],
                            env=env, capture_output=True, text=True,
                            timeout=SUBPROCESS_TIMEOUT, check=False)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"failpoint_off_ns: \d+\.\d\n", result.stdout)


def test_return_action_makes_the_failpoint_answer_true_only_while_it_fires() -> None:
    with failpoints.scoped("x.corrupt=2*return"):
        answers = [failpoints.failpoint("x.corrupt") for _ in range(3)]
    assert answers == [True, True, False]
    assert failpoints.failpoint("x.corrupt") is False


def test_call_action_runs_the_registered_callback() -> None:
    calls: list[str] = []
    failpoints.register_action("note_it", lambda: calls.append("called"))
    with failpoints.scoped("x.call[site=site-2]=call(note_it)"):
        failpoints.failpoint("x.call", site="site-1")
        failpoints.failpoint("x.call", site="site-2")
    assert calls == ["called"]


def test_call_action_needs_an_identifier() -> None:
    with pytest.raises(failpoints.FailpointSyntaxError, match="call"):
        failpoints.configure("x=call(not a name)")
