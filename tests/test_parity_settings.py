"""The settings the training subprocess runs with are the job's (parity with NVFlare 2.7.2).

NVFlare tests that ``ClientConfig`` hands the download-complete timeout (default
1800 s) to the subprocess and that ``FlareAgentWithCellPipe``'s heartbeat defaults
agree with ``FlareAgent``'s.  Here the same promises are checked where they matter:
in a real training subprocess, through the environment the launcher gives it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from pytest_flrelia.contract import job as config
from pytest_flrelia.contract.job import JobConfig, TensorSpec, Timeouts
from pytest_flrelia.contract.result import JobResult
from pytest_flrelia.contract.timeline import Event, EventKind
from pytest_flrelia.scenario.loader import ScenarioError, load_scenarios
from reference_impl.agent import AGENT_SETTINGS_ENV, AgentSettings
from reference_impl.job import run_job
from reference_impl.launcher import SUBPROCESS_LOGGER, SubprocessLauncher

WAIT = 10.0
"""Upper bound for one wait; normally met in milliseconds."""
PRINT_SETTINGS = (
    "import dataclasses, json, os\n"
    "from reference_impl.agent import AgentSettings\n"
    "print('SETTINGS ' + json.dumps(dataclasses.asdict(AgentSettings.from_env(os.environ))))\n"
)


class SettingsLine(logging.Handler):
    """Catches the one ``SETTINGS {...}`` line the child prints."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.found = threading.Event()
        self.settings: dict[str, object] = {}

    def emit(self, record: logging.LogRecord) -> None:
        line = record.getMessage()
        if line.startswith("SETTINGS "):
            self.settings = json.loads(line.removeprefix("SETTINGS "))
            self.found.set()


@pytest.fixture
def settings_line() -> Iterator[SettingsLine]:
    handler = SettingsLine()
    parent = logging.getLogger(SUBPROCESS_LOGGER)
    parent.addHandler(handler)
    previous = parent.level
    parent.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        parent.removeHandler(handler)
        parent.setLevel(previous)


def settings_seen_by_a_subprocess(
    env: dict[str, str], line: SettingsLine, name: str
) -> dict[str, object]:
    launcher = SubprocessLauncher(
        [sys.executable, "-c", PRINT_SETTINGS], launch_once=False, name=name
    )
    try:
        assert launcher.launch_task("train", env)
        assert launcher.wait_for_exit(WAIT), "the settings printer did not exit"
    finally:
        launcher.stop_task()
    assert line.found.wait(WAIT), "the subprocess printed no settings"
    return line.settings


def test_every_agent_setting_round_trips_through_a_real_subprocess_environment(
    settings_line: SettingsLine,
) -> None:
    sent = AgentSettings(
        site="site-7",
        launch_once=True,
        download_complete_timeout=4.25,
        heartbeat_interval=0.35,
        heartbeat_timeout=7.5,
        chunk_bytes=12345,
        job="nightly run, Jürgen's $HOME",
    )
    # Every field differs from its default, so a field the environment drops shows.
    defaults = AgentSettings(site="site-1", launch_once=False)
    assert all(
        getattr(sent, f.name) != getattr(defaults, f.name) for f in dataclasses.fields(sent)
    )

    seen = settings_seen_by_a_subprocess(sent.to_env(), settings_line, "parity-round-trip")

    assert seen == dataclasses.asdict(sent)


def test_a_subprocess_without_settings_in_its_environment_gets_the_production_defaults(
    settings_line: SettingsLine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(AGENT_SETTINGS_ENV, raising=False)  # the child inherits os.environ
    seen = settings_seen_by_a_subprocess({}, settings_line, "parity-defaults")
    assert seen["download_complete_timeout"] == 1800.0
    assert seen["heartbeat_interval"] == config.HEARTBEAT_INTERVAL
    assert seen["heartbeat_timeout"] == config.HEARTBEAT_TIMEOUT


def test_the_production_gate_timeout_is_1800_seconds_on_both_sides() -> None:
    assert config.DOWNLOAD_COMPLETE_TIMEOUT == 1800.0
    assert Timeouts().download_complete == 1800.0
    assert AgentSettings(site="site-1", launch_once=False).download_complete_timeout == 1800.0


def test_agent_defaults_agree_with_the_job_defaults() -> None:
    """An agent built without the job's values behaves as the job would tell it to."""
    agent = AgentSettings(site="site-1", launch_once=False)
    job = JobConfig()
    assert agent.download_complete_timeout == job.timeouts.download_complete
    assert agent.heartbeat_interval == job.timeouts.heartbeat_interval
    assert agent.heartbeat_timeout == job.timeouts.heartbeat
    assert agent.chunk_bytes == job.chunk_bytes


def train_events(result: JobResult, kind: EventKind) -> list[Event]:
    return [e for e in result.timeline.events(kind) if e.process.startswith("train-")]


@pytest.mark.slow
@pytest.mark.parametrize(
    "timeouts",
    [Timeouts(), replace(Timeouts.fast(), download_complete=4.25, heartbeat_interval=0.15)],
    ids=["production-defaults", "scaled-down"],
)
def test_the_training_process_gates_and_heartbeats_with_the_jobs_timeouts(
    timeouts: Timeouts,
) -> None:
    """End to end: the job's gate timeout is the one the subprocess's gate waits with,
    and both ends of the pipe heartbeat with the same settings."""
    job = JobConfig(rounds=1, tensors=TensorSpec(count=1, size_bytes=4096), timeouts=timeouts)
    result = run_job(job)
    assert result.ok, result.error

    gate_waits = train_events(result, EventKind.GATE_WAIT)
    assert [e.detail["timeout"] for e in gate_waits] == [timeouts.download_complete]
    handlers = [e for e in result.timeline.events(EventKind.HANDLER_CREATED) if e.site]
    assert {e.process.split("-")[0] for e in handlers} == {"client", "train"}
    assert {
        (e.detail["heartbeat_interval"], e.detail["heartbeat_timeout"]) for e in handlers
    } == {(timeouts.heartbeat_interval, timeouts.heartbeat)}


@pytest.mark.parametrize("key", ["heartbeat_interval", "stop_poll"])
def test_a_zero_interval_is_refused_naming_file_line_and_key(
    tmp_path: Path, key: str
) -> None:
    """NVFlare ``test_peer_read_timeout_zero_raises``: a timeout of 0 is an error, not a
    silent busy loop (a 0 heartbeat would make every peer look gone)."""
    path = tmp_path / "zero.scenario.yaml"
    path.write_text(f"name: zero\njob:\n  timeouts:\n    {key}: 0\n", encoding="utf-8")
    with pytest.raises(ScenarioError) as raised:
        load_scenarios(path)
    assert str(raised.value).startswith(f"{path}:4: job.timeouts.{key}: must be > 0")
