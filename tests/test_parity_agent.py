"""Agent behaviours NVFlare 2.7.2's ``test_download_initiated_gating.py`` asserts,
with a real pipe and a real download service."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import NoReturn

import numpy as np
import pytest

from reference_impl.agent import Agent, AgentSettings
from reference_impl.download import ArraySink, Downloader, TensorRef
from reference_impl.messages import Result, Task
from reference_impl.pipe import Pipe
from reference_impl.pipe_handler import PipeHandler
from reference_impl.timeline import EventKind, Timeline
from reference_impl.wire import Message, Topic, new_secret

WAIT = 10.0
"""Upper bound for one wait; normally met in milliseconds."""
GATE = 60.0
"""The gate timeout: a send that waited in the gate would take this long."""


class ClientEnd:
    """The client's end of an agent's pipe, played by the test."""

    def __init__(self) -> None:
        self.secret = new_secret()
        self.pipe = Pipe.listen(self.secret, name="parity-client")
        self.handler = PipeHandler(
            self.pipe, name="parity-client", heartbeat_interval=0.1, heartbeat_timeout=10.0
        )
        self.handler.start()

    def send_task(self, round: int) -> None:
        task = Task(site="site-1", round=round, model={"w": np.ones(4)})
        assert self.handler.send(task.to_message())

    def next_message(self, topic: str) -> Message:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            message = self.handler.get_next(0.05)
            if message is not None and message.topic == topic:
                return message
        raise AssertionError(f"no {topic} message within {WAIT}s")


def refuse_exit(code: int) -> NoReturn:
    raise AssertionError(f"a launch_once agent exited ({code}) in the middle of the job")


@pytest.fixture
def launch_once_agent() -> Iterator[tuple[Agent, ClientEnd]]:
    client = ClientEnd()
    agent = Agent(
        Pipe.connect(client.pipe.address, client.secret, name="parity-agent"),
        AgentSettings(
            site="site-1",
            launch_once=True,
            download_complete_timeout=GATE,
            heartbeat_interval=0.1,
            heartbeat_timeout=10.0,
            chunk_bytes=1024,
        ),
        timeline=Timeline("agent"),
        exit_fn=refuse_exit,
    )
    agent.init()
    client.next_message(Topic.HELLO)
    try:
        yield agent, client
    finally:
        agent.close()
        client.handler.stop()


def test_a_validate_result_after_a_train_round_does_not_wait_in_the_gate(
    launch_once_agent: tuple[Agent, ClientEnd],
) -> None:
    """NVFlare ``test_clear_called_before_send``: what the train round left behind must not
    make the next round's result without tensors wait for a download."""
    agent, client = launch_once_agent
    client.send_task(1)
    assert agent.receive(timeout=WAIT) is not None
    returned = threading.Event()

    def send_train_result() -> None:
        agent.send(Result(tensors={"w": np.arange(64.0)}))
        returned.set()

    sender = threading.Thread(target=send_train_result, name="parity-send", daemon=True)
    sender.start()
    refs = [TensorRef.from_json(dict(r)) for r in client.next_message(Topic.RESULT).payload["refs"]]
    sink = ArraySink()
    for ref in refs:
        Downloader(retries=1, retry_delay=0.05, connect_timeout=2.0).download(ref, sink)
    assert returned.wait(WAIT), "the train round's gate did not open after the download"
    sender.join(WAIT)

    client.send_task(2)
    assert agent.receive(timeout=WAIT) is not None
    started = time.monotonic()
    agent.send(Result(metrics={"accuracy": 0.5}))
    elapsed = time.monotonic() - started

    assert elapsed < GATE / 10, f"the validate result waited {elapsed:.1f}s"
    timeline = agent._timeline
    assert [e.round for e in timeline.events(EventKind.GATE_WAIT)] == [1]
    assert [e.round for e in timeline.events(EventKind.GATE_OPEN)] == [1]
    assert client.next_message(Topic.RESULT).payload["refs"] == []
