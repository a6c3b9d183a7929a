"""The agent's download gate and exit seam, with a real pipe and a real download service."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NoReturn

import numpy as np
import pytest

from pytest_flrelia.contract.timeline import EventKind, Timeline
from reference_impl.agent import Agent, AgentSettings
from reference_impl.download import ArraySink, Downloader, TensorRef
from reference_impl.messages import Result, Task
from reference_impl.pipe import Pipe
from reference_impl.pipe_handler import PipeHandler
from reference_impl.wire import Message, Topic, new_secret


class ExitCalled(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


@dataclass
class Client:
    """The client end of an agent's pipe, played by the test."""

    pipe: Pipe
    handler: PipeHandler

    def send_task(self, round: int, model: dict[str, np.ndarray] | None = None) -> None:
        task = Task(site="site-1", round=round, model=model or {"w": np.ones(4)})
        assert self.handler.send(task.to_message())

    def next_message(self, topic: str, timeout: float = 5.0) -> Message:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self.handler.get_next(0.05)
            if message is not None and message.topic == topic:
                return message
        raise AssertionError(f"no {topic} message within {timeout}s")


@pytest.fixture
def exits() -> list[int]:
    return []


def make_agent(
    launch_once: bool, exits: list[int], gate_timeout: float = 5.0
) -> tuple[Agent, Client]:
    secret = new_secret()
    listener = Pipe.listen(secret, name="test-client")
    client = Client(
        listener,
        PipeHandler(listener, name="test-client", heartbeat_interval=0.1, heartbeat_timeout=5.0),
    )
    client.handler.start()

    def fake_exit(code: int) -> NoReturn:
        exits.append(code)
        raise ExitCalled(code)

    agent = Agent(
        Pipe.connect(listener.address, secret, name="test-agent"),
        AgentSettings(
            site="site-1",
            launch_once=launch_once,
            download_complete_timeout=gate_timeout,
            heartbeat_interval=0.1,
            heartbeat_timeout=5.0,
            chunk_bytes=1024,
        ),
        timeline=Timeline("agent"),
        exit_fn=fake_exit,
    )
    agent.init()
    client.next_message(Topic.HELLO)
    return agent, client


@pytest.fixture
def agent_per_round(exits: list[int]) -> Iterator[tuple[Agent, Client]]:
    agent, client = make_agent(False, exits)
    yield agent, client
    agent.close()
    client.handler.stop()


@pytest.fixture
def agent_once(exits: list[int]) -> Iterator[tuple[Agent, Client]]:
    agent, client = make_agent(True, exits)
    yield agent, client
    agent.close()
    client.handler.stop()


def send_in_thread(
    agent: Agent, result: Result
) -> tuple[threading.Thread, threading.Event, list[BaseException]]:
    returned = threading.Event()
    raised: list[BaseException] = []

    def run() -> None:
        try:
            agent.send(result)
        except BaseException as exc:  # the fake exit seam raises ExitCalled
            raised.append(exc)
        returned.set()

    thread = threading.Thread(target=run, name="agent-send", daemon=True)
    thread.start()
    return thread, returned, raised


def download(refs: list[TensorRef]) -> ArraySink:
    sink = ArraySink()
    downloader = Downloader(retries=1, retry_delay=0.05, connect_timeout=2.0)
    for ref in refs:
        downloader.download(ref, sink)
    return sink


def test_gate_holds_send_until_every_tensor_is_downloaded(
    agent_once: tuple[Agent, Client], exits: list[int]
) -> None:
    agent, client = agent_once
    client.send_task(1)
    task = agent.receive(timeout=5.0)
    assert task is not None
    tensors = {"a": np.arange(1000, dtype=np.float64), "b": np.full((3, 5), 7, dtype=np.float32)}
    thread, returned, raised = send_in_thread(agent, Result(tensors=tensors, weight=2.0))

    result = client.next_message(Topic.RESULT)
    refs = [TensorRef.from_json(dict(r)) for r in result.payload["refs"]]
    assert {r.name for r in refs} == {"a", "b"}
    assert not returned.is_set(), "send() returned before the server downloaded anything"

    sink = download(refs[:1])
    assert not returned.wait(0.2), "send() returned with one tensor still pending"
    sink = download(refs[1:])
    assert returned.wait(5.0), "send() did not return after the last download"
    assert sink.arrays["b"].tolist() == tensors["b"].tolist()
    assert raised == [] and exits == []
    thread.join(5.0)


def test_result_without_tensors_returns_at_once(agent_once: tuple[Agent, Client]) -> None:
    agent, client = agent_once
    client.send_task(1)
    assert agent.receive(timeout=5.0) is not None
    started = time.monotonic()
    agent.send(Result(metrics={"accuracy": 0.9}))
    assert time.monotonic() - started < 1.0
    result = client.next_message(Topic.RESULT)
    assert result.payload["refs"] == [] and result.payload["metrics"] == {"accuracy": 0.9}


def test_gate_times_out_when_nobody_downloads(exits: list[int]) -> None:
    agent, client = make_agent(True, exits, gate_timeout=0.3)
    try:
        client.send_task(1)
        assert agent.receive(timeout=5.0) is not None
        started = time.monotonic()
        agent.send(Result(tensors={"w": np.ones(10)}))
        assert 0.3 <= time.monotonic() - started < 3.0
        timeline = agent._timeline
        assert timeline.events(EventKind.GATE_TIMEOUT, round=1)
    finally:
        agent.close()
        client.handler.stop()


def test_gate_outcomes_are_logged_as_what_they_were(
    exits: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    """Completed is INFO, a timeout is an ERROR that says so; neither reads as the other."""
    agent, client = make_agent(True, exits, gate_timeout=0.3)
    try:
        with caplog.at_level("INFO", logger="reference_impl.agent"):
            client.send_task(1)
            assert agent.receive(timeout=5.0) is not None
            agent.send(Result(tensors={"w": np.ones(10)}))  # nobody downloads: times out
            client.next_message(Topic.RESULT)
            client.send_task(2)
            assert agent.receive(timeout=5.0) is not None
            thread, returned, raised = send_in_thread(agent, Result(tensors={"w": np.ones(4)}))
            refs = client.next_message(Topic.RESULT).payload["refs"]
            download([TensorRef.from_json(dict(r)) for r in refs])
            assert returned.wait(5.0) and raised == []
            thread.join(5.0)
        by_round = {
            (r.levelname, "round 1" in r.getMessage(), "round 2" in r.getMessage())
            for r in caplog.records
            if "download" in r.getMessage()
        }
        assert ("ERROR", True, False) in by_round, caplog.text
        assert ("INFO", False, True) in by_round, caplog.text
        assert "did not download round 1" in caplog.text
        assert "did not download round 2" not in caplog.text
    finally:
        agent.close()
        client.handler.stop()


def test_per_round_process_exits_through_the_seam_after_the_gate(
    agent_per_round: tuple[Agent, Client], exits: list[int]
) -> None:
    agent, client = agent_per_round
    client.send_task(1)
    assert agent.receive(timeout=5.0) is not None
    thread, returned, raised = send_in_thread(agent, Result(tensors={"w": np.ones(16)}))
    refs = [TensorRef.from_json(dict(r)) for r in client.next_message(Topic.RESULT).payload["refs"]]
    assert exits == []
    download(refs)
    assert returned.wait(5.0)
    assert exits == [0]
    assert isinstance(raised[0], ExitCalled)
    thread.join(5.0)


def test_per_round_process_with_nothing_to_download_still_exits(
    agent_per_round: tuple[Agent, Client], exits: list[int]
) -> None:
    agent, client = agent_per_round
    client.send_task(1)
    assert agent.receive(timeout=5.0) is not None
    with pytest.raises(ExitCalled):
        agent.send(Result(metrics={"loss": 1.0}))
    assert exits == [0]


def test_launch_once_process_serves_the_next_round(
    agent_once: tuple[Agent, Client], exits: list[int]
) -> None:
    agent, client = agent_once
    for round in (1, 2):
        client.send_task(round)
        task = agent.receive(timeout=5.0)
        assert task is not None and task.round == round
        thread, returned, _ = send_in_thread(agent, Result(tensors={"w": np.ones(8) * round}))
        refs = [
            TensorRef.from_json(dict(r)) for r in client.next_message(Topic.RESULT).payload["refs"]
        ]
        assert download(refs).arrays["w"].tolist() == [float(round)] * 8
        assert returned.wait(5.0)
        thread.join(5.0)
    assert exits == []
    assert agent.is_running()


def test_end_from_the_client_stops_the_script_loop(agent_once: tuple[Agent, Client]) -> None:
    agent, client = agent_once
    assert client.handler.send(Message(Topic.END, {"site": "site-1"}))
    assert agent.receive(timeout=5.0) is None
    assert not agent.is_running()


def wait_for(timeline: Timeline, kind: EventKind, round: int, timeout: float = 5.0) -> bool:
    """True once ``timeline`` holds a ``kind`` event of ``round`` (checked on every event)."""
    seen = threading.Event()
    unsubscribe = timeline.subscribe(
        lambda e: seen.set() if e.kind is kind and e.round == round else None
    )
    try:
        return bool(timeline.events(kind, round=round)) or seen.wait(timeout)
    finally:
        unsubscribe()


def test_launch_once_gate_waits_for_its_own_round_only(exits: list[int]) -> None:
    """Round 1's gate times out with its tensor never downloaded; round 2's tensor is
    downloaded in full, so round 2's gate opens (it once waited for round 1's too)."""
    agent, client = make_agent(True, exits, gate_timeout=0.5)
    timeline = agent._timeline
    try:
        client.send_task(1)
        assert agent.receive(timeout=5.0) is not None
        agent.send(Result(tensors={"w": np.ones(10)}))
        client.next_message(Topic.RESULT)
        assert timeline.events(EventKind.GATE_TIMEOUT, round=1)

        client.send_task(2)
        assert agent.receive(timeout=5.0) is not None
        thread, returned, raised = send_in_thread(agent, Result(tensors={"w": np.full(10, 2.0)}))
        refs = [
            TensorRef.from_json(dict(r)) for r in client.next_message(Topic.RESULT).payload["refs"]
        ]
        assert download(refs).arrays["w"].tolist() == [2.0] * 10
        assert returned.wait(5.0) and raised == []
        assert timeline.events(EventKind.GATE_OPEN, round=2), "round 2's gate did not open"
        assert not timeline.events(EventKind.GATE_TIMEOUT, round=2)
        assert agent._require_service().pending(1) == 1, "round 1's tensor is still pending"
        thread.join(5.0)
    finally:
        agent.close()
        client.handler.stop()


def test_a_gate_released_by_closing_the_service_is_not_a_timeout(
    exits: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    agent, client = make_agent(True, exits, gate_timeout=30.0)
    timeline = agent._timeline
    try:
        client.send_task(1)
        assert agent.receive(timeout=5.0) is not None
        thread, returned, raised = send_in_thread(agent, Result(tensors={"w": np.ones(10)}))
        assert wait_for(timeline, EventKind.GATE_WAIT, 1)
        with caplog.at_level("WARNING", logger="reference_impl.agent"):
            agent.close()
            assert returned.wait(5.0), "closing the service did not release the gate"
        assert raised == []
        closed = timeline.events(EventKind.GATE_CLOSED, round=1)
        assert len(closed) == 1 and closed[0].detail["pending"] == 1
        assert not timeline.events(EventKind.GATE_TIMEOUT, round=1)
        assert not timeline.events(EventKind.GATE_OPEN, round=1)
        assert "released because the download service closed" in caplog.text
        assert "did not download" not in caplog.text
        thread.join(5.0)
    finally:
        agent.close()
        client.handler.stop()


def test_a_result_that_cannot_be_sent_raises_at_once_without_a_gate(exits: list[int]) -> None:
    """The client is gone: send() raises at once instead of gating tensors nobody will pull."""
    agent, client = make_agent(True, exits, gate_timeout=30.0)
    timeline = agent._timeline
    try:
        client.send_task(1)
        assert agent.receive(timeout=5.0) is not None
        client.handler.stop()  # closes the client's end of the pipe
        assert agent._pipe.wait_for_no_peer(5.0)
        started = time.monotonic()
        with pytest.raises(ConnectionError, match="could not send the result of round 1"):
            agent.send(Result(tensors={"w": np.ones(10)}))
        assert time.monotonic() - started < 5.0, "send() waited for something"
        assert not timeline.events(EventKind.GATE_WAIT), "entered the download gate"
        (error,) = timeline.events(EventKind.ERROR, round=1)
        assert error.detail["reason"] == "the result could not be sent"
    finally:
        agent.close()


def test_a_validate_result_after_a_train_round_does_not_wait_in_the_gate(
    exits: list[int],
) -> None:
    """NVFlare ``test_clear_called_before_send``: what the train round left behind must not
    make the next round's result without tensors wait for a download."""
    gate = 60.0
    agent, client = make_agent(True, exits, gate_timeout=gate)
    try:
        client.send_task(1)
        assert agent.receive(timeout=5.0) is not None
        thread, returned, raised = send_in_thread(agent, Result(tensors={"w": np.arange(64.0)}))
        refs = client.next_message(Topic.RESULT).payload["refs"]
        download([TensorRef.from_json(dict(r)) for r in refs])
        assert returned.wait(5.0) and raised == [], "the train round's gate did not open"
        thread.join(5.0)

        client.send_task(2)
        assert agent.receive(timeout=5.0) is not None
        started = time.monotonic()
        agent.send(Result(metrics={"accuracy": 0.5}))
        elapsed = time.monotonic() - started

        assert elapsed < gate / 10, f"the validate result waited {elapsed:.1f}s"
        timeline = agent._timeline
        assert [e.round for e in timeline.events(EventKind.GATE_WAIT)] == [1]
        assert [e.round for e in timeline.events(EventKind.GATE_OPEN)] == [1]
        assert client.next_message(Topic.RESULT).payload["refs"] == []
    finally:
        agent.close()
        client.handler.stop()
