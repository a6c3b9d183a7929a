"""Nobody else gets in: hostile local processes against a real pipe and a real download service.

Every attack comes from another process (``tests/_hostile.py`` run with this
interpreter) that reports what it saw as JSON.  Each one must be rejected,
logged, and change nothing: the legitimate peer's exchange stays byte-exact and
the download gate stays where it was.  Attacks whose check lives in the
executor or the task exchanger run inside a real one-site job.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psutil
import pytest
from _hostile import (
    GREETING_BYTES,
    RELEASE_SIGNAL,
    REPLY_BYTES,
    WAIT,
    Attacker,
    LogWaiter,
    RecordingRelay,
    Report,
    subprocess_env_with_tests,
)
from _pipe_helpers import Network, ThreadExceptions, wait_for_event

from pytest_flrelia.contract.job import JobConfig, TensorSpec, Timeouts
from pytest_flrelia.contract.result import JobResult
from pytest_flrelia.contract.timeline import Event, EventKind, Timeline
from pytest_flrelia.targets.reference.oracle import expected_global_model
from reference_impl.download import (
    REQUEST_MAX_BYTES,
    ArraySink,
    Downloader,
    DownloadService,
    TensorRef,
)
from reference_impl.executor import LauncherExecutor
from reference_impl.job import Runtime, run_job
from reference_impl.launcher import RunStatus
from reference_impl.pipe import PIPE_ADDRESS_ENV, PIPE_SECRET_ENV, Pipe, address_from_env
from reference_impl.wire import Message, new_secret

HANDSHAKE_TIMEOUT = 1.5
"""The pipe's handshake bound here: long enough to do a legit exchange inside it."""
SLOWLORIS_HANDSHAKE_TIMEOUT = 0.5
HMAC_REJECTION = r"^handshake failed: peer failed the HMAC challenge$"


# =========================================================================== the pipe


@pytest.fixture
def net() -> Iterator[Network]:
    with Network() as network:
        yield network


def listen(net: Network, handshake_timeout: float = HANDSHAKE_TIMEOUT) -> Pipe:
    return net.listen(handshake_timeout=handshake_timeout)


def assert_exchange_is_byte_exact(server: Pipe, client: Pipe, tag: str) -> None:
    """One message each way, with a random blob; nothing else may be in either inbox."""
    assert server.pending == 0, f"{tag}: something reached the server's inbox"
    up = Message("task", {"tag": tag, "way": "up"}, (os.urandom(40_000), b""))
    client.send(up)
    assert server.receive(WAIT) == up, f"{tag}: the legit peer's message did not arrive intact"
    down = Message("result", {"tag": tag, "way": "down"}, (os.urandom(12_345),))
    server.send(down)
    assert client.receive(WAIT) == down, f"{tag}: the server's reply did not reach the legit peer"
    assert server.pending == 0 and client.pending == 0


def assert_warned_about(caplog: pytest.LogCaptureFixture, peer: str) -> None:
    assert any(
        r.levelno == logging.WARNING
        and "closed the connection from" in r.getMessage()
        and peer in r.getMessage()
        for r in caplog.records
    ), f"no warning names the rejected peer {peer}"


PipeSpec = Callable[[Pipe, bytes], dict[str, Any]]

PIPE_ATTACKS: dict[str, tuple[PipeSpec, str]] = {
    "no secret": (lambda s, k: {"kind": "no_secret"}, HMAC_REJECTION),
    "wrong secret": (lambda s, k: {"kind": "wrong_secret"}, HMAC_REJECTION),
    "truncated handshake": (
        lambda s, k: {"kind": "truncated_handshake", "send_bytes": 40},
        rf"^handshake failed: connection closed after 40 of {REPLY_BYTES} bytes$",
    ),
    "garbage instead of the handshake": (
        lambda s, k: {"kind": "garbage", "send_bytes": 300},
        HMAC_REJECTION,
    ),
    "the secret itself in the clear": (
        lambda s, k: {"kind": "secret_in_clear", "secret": k.hex()},
        HMAC_REJECTION,
    ),
    "oversized first frame after a failed handshake": (
        lambda s, k: {"kind": "oversized_after_failed_handshake"},
        HMAC_REJECTION,
    ),
    "oversized frame from a peer holding the secret": (
        lambda s, k: {
            "kind": "oversized_after_valid_handshake",
            "secret": k.hex(),
            "claim": 0xFFFFFFFF,
        },
        r"^FrameError: frame of 4294967295 bytes exceeds the \d+-byte cap$",
    ),
}


@pytest.mark.parametrize("attack", list(PIPE_ATTACKS))
def test_pipe_listener_cuts_off_a_hostile_process_and_the_legit_peer_works(
    net: Network, caplog: pytest.LogCaptureFixture, attack: str
) -> None:
    caplog.set_level(logging.WARNING, logger="reference_impl.pipe")
    spec, reason = PIPE_ATTACKS[attack]
    server = listen(net)
    client = net.connect(server)
    assert server.wait_for_peer(WAIT)

    with Attacker({**spec(server, net.secret), "address": list(server.address)}) as attacker:
        report = attacker.report()
        assert report["closed_by_server"], report
        assert report["bytes_after"] == 0, "the server must say nothing more to a rejected peer"
        if attack == "wrong secret":
            assert report["handshake_error"], "the attacker must not believe it got in"
        event = net.rejected(report["peer"])
        assert re.search(reason, event.detail["reason"]), event.detail["reason"]
        assert_warned_about(caplog, report["peer"])
        assert_exchange_is_byte_exact(server, client, attack)
    assert attacker.process.returncode == 0, attacker.stderr
    assert len(net.timeline.events(EventKind.FRAME_REJECTED)) == 1


def test_a_replayed_handshake_fails_against_a_fresh_nonce(
    net: Network, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="reference_impl.pipe")
    server = listen(net)
    relay = RecordingRelay(server.address)
    client = Pipe.connect(relay.address, net.secret, name=f"{net.name}-client")
    try:
        assert server.wait_for_peer(WAIT)
        assert_exchange_is_byte_exact(server, client, "recorded")
        sent, received = relay.recorded()
        assert len(sent) > REPLY_BYTES, "the recording holds the handshake and a frame"

        with Attacker(
            {"kind": "replay", "address": list(server.address), "recorded": sent.hex()}
        ) as attacker:
            report = attacker.report()
            assert report["nonce"] != received[len(b"FLR1") : GREETING_BYTES].hex()
            assert report["closed_by_server"] and report["bytes_after"] == 0, report
            event = net.rejected(report["peer"])
            assert re.search(HMAC_REJECTION, event.detail["reason"])
            assert_warned_about(caplog, report["peer"])
            assert_exchange_is_byte_exact(server, client, "after the replay")
    finally:
        client.close()
        relay.close()


def test_a_flood_of_50_silent_connections_does_not_lock_out_the_legit_peer(
    net: Network,
) -> None:
    server = listen(net)
    with Attacker(
        {"kind": "flood", "address": list(server.address), "connections": 50}
    ) as attacker:
        flood = attacker.report()
        assert flood["greeted"] == 50, "every flood connection holds a pending handshake"

        client = net.connect(server)
        assert_exchange_is_byte_exact(server, client, "during the flood")
        exchanged_at = time.monotonic()

        assert attacker.report()["closed_by_server"] == 50
        rejections = [net.rejected(peer) for peer in flood["peers"]]
    assert all(e.detail["reason"].startswith("handshake failed") for e in rejections)
    assert exchanged_at < min(e.ts for e in rejections), "the exchange ran while all 50 waited"
    assert_exchange_is_byte_exact(server, client, "after the flood")


def test_a_slow_loris_handshake_is_cut_off_at_the_handshake_timeout(net: Network) -> None:
    server = listen(net, SLOWLORIS_HANDSHAKE_TIMEOUT)
    with Attacker(
        {"kind": "slowloris_handshake", "address": list(server.address), "interval": 0.1}
    ) as attacker:
        assert attacker.report()["phase"] == "dribbling"
        client = net.connect(server)
        assert_exchange_is_byte_exact(server, client, "during the slow loris")
        exchanged_at = time.monotonic()
        report = attacker.report()
        assert report["closed_by_server"], report
        assert report["sent"] < REPLY_BYTES
        assert report["seconds"] < SLOWLORIS_HANDSHAKE_TIMEOUT + 2.0
        event = net.rejected(report["peer"])
    assert "before the deadline" in event.detail["reason"], event.detail["reason"]
    assert exchanged_at < event.ts, "the legit exchange ran while the slow loris held on"
    assert_exchange_is_byte_exact(server, client, "after the slow loris")


# =========================================================================== the download service


@dataclass
class Sites:
    """Two sites' download services, each with one published tensor."""

    timeline: Timeline
    one: DownloadService
    two: DownloadService
    ref1: TensorRef
    ref2: TensorRef
    tensor1: np.ndarray
    tensor2: np.ndarray


@pytest.fixture
def sites() -> Iterator[Sites]:
    timeline = Timeline("test")
    with ThreadExceptions() as caught:
        one = DownloadService(site="site-1", chunk_bytes=4096, timeline=timeline)
        two = DownloadService(site="site-2", chunk_bytes=4096, timeline=timeline)
        try:
            tensor1 = np.random.default_rng(1).standard_normal(3000)
            tensor2 = np.random.default_rng(2).standard_normal(1000)
            (ref1,) = one.publish({"w": tensor1}, round=1)
            (ref2,) = two.publish({"w": tensor2}, round=1)
            yield Sites(timeline, one, two, ref1, ref2, tensor1, tensor2)
        finally:
            one.close()
            two.close()
    assert not caught.caught, caught.describe()


def get(ref: TensorRef, offset: Any = 0, tensor_id: str | None = None) -> dict[str, Any]:
    return {"op": "get", "tensor_id": tensor_id or ref.tensor_id, "offset": offset}


def done(ref: TensorRef, checksum: str) -> dict[str, Any]:
    return {"op": "done", "tensor_id": ref.tensor_id, "checksum": checksum}


@dataclass(frozen=True)
class DownloadAttack:
    spec: Callable[[Sites], dict[str, Any]]
    rejected: str | None
    """Regex of the rejection reason; None: the service refuses but keeps the connection."""
    refusals: tuple[str, ...] = ()
    """Regexes of the ``error`` replies the attacker must get, in order."""


UNKNOWN_ID = "site-1/1/w/" + "0" * 32

DOWNLOAD_ATTACKS: dict[str, DownloadAttack] = {
    "request without a token": DownloadAttack(
        lambda s: {"token": None, "requests": [get(s.ref1)]},
        r"^AuthError: peer failed the HMAC challenge$",
    ),
    "wrong token": DownloadAttack(
        lambda s: {"token": new_secret().hex(), "requests": [get(s.ref1)]},
        r"^AuthError: peer failed the HMAC challenge$",
    ),
    "another site's token for this site's tensor": DownloadAttack(
        lambda s: {"token": s.ref2.token, "requests": [get(s.ref1)]},
        r"^AuthError: peer failed the HMAC challenge$",
    ),
    "unknown tensor id": DownloadAttack(
        lambda s: {
            "token": s.ref1.token,
            "requests": [
                get(s.ref1, tensor_id=UNKNOWN_ID),
                done(s.ref1, "0" * 32) | {"tensor_id": UNKNOWN_ID},
            ],
        },
        None,
        ("^unknown tensor", "^unknown tensor"),
    ),
    "another site's tensor id over a valid handshake": DownloadAttack(
        lambda s: {"token": s.ref1.token, "requests": [get(s.ref2), done(s.ref2, s.ref2.checksum)]},
        None,
        ("^unknown tensor", "^unknown tensor"),
    ),
    "done with a wrong checksum": DownloadAttack(
        lambda s: {"token": s.ref1.token, "requests": [done(s.ref1, "f" * 32)]},
        None,
        ("^checksum mismatch",),
    ),
    "negative offset": DownloadAttack(
        lambda s: {"token": s.ref1.token, "requests": [get(s.ref1, -1)]},
        r"^_ProtocolError: bad offset -1 ",
    ),
    "offset inside a chunk": DownloadAttack(
        lambda s: {"token": s.ref1.token, "requests": [get(s.ref1, 1)]},
        r"^_ProtocolError: bad offset 1 ",
    ),
    "huge offset": DownloadAttack(
        lambda s: {"token": s.ref1.token, "requests": [get(s.ref1, 2**62)]},
        rf"^_ProtocolError: bad offset {2**62} ",
    ),
    "garbage frame after a valid handshake": DownloadAttack(
        lambda s: {
            "token": s.ref1.token,
            "requests": [],
            "raw": [(b"\x00\x00\x00\x10" + b"\x00\x00\x00\x0c" + b"not json!!!!").hex()],
        },
        r"^FrameError: header is not JSON",
    ),
    "oversized request": DownloadAttack(
        lambda s: {
            "token": s.ref1.token,
            "requests": [],
            "raw": [(REQUEST_MAX_BYTES + 1).to_bytes(4, "big").hex() + "00" * 4096],
        },
        rf"^FrameError: frame of {REQUEST_MAX_BYTES + 1} bytes exceeds the "
        rf"{REQUEST_MAX_BYTES}-byte cap$",
    ),
}


def rejection_logs(caplog: pytest.LogCaptureFixture, port: int) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "reference_impl.download"
        and f"', {port})" in r.getMessage()
        and "closing connection" in r.getMessage()
    ]


def assert_gate_closed_then_legit_download_opens_it(sites: Sites) -> None:
    """The attack changed nothing; then the real server downloads byte-exact and opens the gate."""
    assert sites.one.pending() == 1 and not sites.one.wait_all_downloaded(0)
    assert sites.two.pending() == 1
    downloader = Downloader(retries=0, connect_timeout=WAIT, timeline=sites.timeline)
    sink = ArraySink()
    downloader.download(sites.ref1, sink)
    assert sink.arrays["w"].tobytes() == sites.tensor1.tobytes()
    assert sites.one.wait_all_downloaded(WAIT)
    assert sites.two.pending() == 1, "site-2's gate is untouched"


@pytest.mark.parametrize("attack", list(DOWNLOAD_ATTACKS))
def test_download_service_refuses_a_hostile_process_and_the_server_still_downloads(
    sites: Sites, caplog: pytest.LogCaptureFixture, attack: str
) -> None:
    caplog.set_level(logging.INFO, logger="reference_impl.download")
    case = DOWNLOAD_ATTACKS[attack]
    spec = {"kind": "download", "address": list(sites.one.address), **case.spec(sites)}

    with Attacker(spec) as attacker:
        report = attacker.report()
        rejections = sites.timeline.events(EventKind.FRAME_REJECTED, site="site-1")
        if case.rejected is None:
            assert report["handshake_ok"] and not report["closed_by_server"], report
            assert rejections == [], "a refusal is an answer, not a protocol violation"
            assert len(report["replies"]) == len(case.refusals)
            for reply, pattern in zip(report["replies"], case.refusals, strict=True):
                assert reply["op"] == "error" and re.search(pattern, reply["reason"]), reply
            warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
            for reply in report["replies"]:
                assert f"download service site-1: {reply['reason']}" in warnings, "not logged"
        else:
            assert report["closed_by_server"] and report["replies"] == [], report
            assert report.get("bytes_after", 0) == 0, "nothing is served to a rejected peer"
            (event,) = rejections
            assert event.detail["channel"] == "download"
            assert re.search(case.rejected, event.detail["reason"]), event.detail["reason"]
            (logged,) = rejection_logs(caplog, report["port"])
            assert event.detail["reason"] in logged
        assert_gate_closed_then_legit_download_opens_it(sites)
    assert attacker.process.returncode == 0, attacker.stderr
    assert not sites.timeline.events(EventKind.FRAME_REJECTED, site="site-2")


def test_a_flood_of_50_wrong_tokens_leaves_the_download_service_serving(
    sites: Sites, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="reference_impl.download")
    with Attacker(
        {"kind": "download_flood", "address": list(sites.one.address), "connections": 50}
    ) as attacker:
        report = attacker.report()
        assert report["closed_by_server"] == 50
        rejections = sites.timeline.events(EventKind.FRAME_REJECTED, site="site-1")
        assert len(rejections) == 50
        assert all("AuthError" in e.detail["reason"] for e in rejections)
        for port in report["ports"]:
            assert len(rejection_logs(caplog, port)) == 1, f"no warning for port {port}"
        assert_gate_closed_then_legit_download_opens_it(sites)


# =========================================================================== inside a real job

FAST = Timeouts.fast()
FORGED_REFS = [
    {
        "site": "site-2",
        "round": 1,
        "name": "w0",
        "tensor_id": "x",
        "address": ["127.0.0.1", 9],
        "token": "00",
        "shape": [1],
        "dtype": "<f8",
        "nbytes": 8,
        "checksum": "0" * 32,
        "chunk_bytes": 8,
    }
]


@dataclass
class Attack:
    """What the orchestrator of a job-level attack saw."""

    report: Report | None = None
    evidence: bool = False
    errors: list[str] = field(default_factory=list)


def run_job_under_attack(
    topic: str, payload: Mapping[str, Any], evidence: Callable[[Timeline], bool]
) -> tuple[JobConfig, JobResult, Attack]:
    """A one-site, one-round job whose agent holds its result while a compromised
    process (it has the pipe secret from ``launch_env``) sends one forged message.

    The attacker starts on TASK_SENT; the agent is released once ``evidence``
    (the check that rejected the forgery) has been seen, or at once if the
    attack itself failed, so the job never waits on a broken test.
    """
    config = JobConfig(
        sites=1,
        rounds=1,
        tensors=TensorSpec(count=2, size_bytes=16 * 1024),
        timeouts=FAST,
        chunk_bytes=8 * 1024,
    )
    timeline = Timeline("server")
    executors: dict[str, LauncherExecutor] = {}
    task_sent = threading.Event()
    attack = Attack()

    def on_event(event: Event) -> None:
        if event.kind is EventKind.TASK_SENT:
            task_sent.set()

    def orchestrate() -> None:
        executor: LauncherExecutor | None = None
        try:
            assert task_sent.wait(WAIT), "the task was never sent"
            executor = executors["site-1"]
            env = executor.launch_env
            spec = {
                "kind": "forge",
                "address": list(address_from_env(env[PIPE_ADDRESS_ENV])),
                "secret": env[PIPE_SECRET_ENV],
                "topic": topic,
                "payload": dict(payload),
            }
            with Attacker(spec) as attacker:
                attack.report = attacker.report()
            attack.evidence = evidence(timeline)
        except BaseException as exc:  # reported by the test, never lost in this thread
            attack.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            pid = executor.launcher.pid if executor is not None else None
            if (
                pid is not None
                and executor is not None
                and (executor.launcher.check_run_status() is RunStatus.RUNNING)
            ):
                os.kill(pid, RELEASE_SIGNAL)

    unsubscribe = timeline.subscribe(on_event)
    orchestrator = threading.Thread(target=orchestrate, name="attack-orchestrator", daemon=True)
    orchestrator.start()
    try:
        result = run_job(
            config,
            runtime=Runtime(agent_class="_hostile:HeldResultAgent"),
            timeline=timeline,
            subprocess_env=subprocess_env_with_tests(),
            on_site_ready=executors.__setitem__,
        )
    finally:
        task_sent.set()  # wakes the orchestrator if the job ended before its task
        orchestrator.join(WAIT * 2)
        unsubscribe()
    assert not orchestrator.is_alive()
    return config, result, attack


def assert_job_exact(config: JobConfig, result: JobResult) -> None:
    assert result.ok, (result.error, result.site_errors)
    expected = expected_global_model(config)
    assert set(result.global_model) == set(expected)
    for name, array in expected.items():
        np.testing.assert_allclose(result.global_model[name], array, rtol=1e-12, atol=0)
    alive = [
        pid
        for pid in result.launched_pids
        if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    ]
    assert alive == [], f"training processes outlived the job: {alive}"


@pytest.mark.slow
def test_a_forged_result_claiming_another_site_is_rejected_by_the_executor() -> None:
    payload = {"site": "site-2", "round": 1, "weight": 1000.0, "refs": FORGED_REFS}
    with LogWaiter(
        "reference_impl.executor", r"rejecting a result that claims to be from 'site-2'"
    ) as rejected:
        config, result, attack = run_job_under_attack(
            "result", payload, lambda timeline: rejected.wait()
        )
    assert attack.errors == [] and attack.report is not None and attack.report["sent"]
    assert attack.evidence and len(rejected.matched) == 1
    (accepted,) = result.timeline.events(EventKind.RESULT_RECEIVED)
    assert accepted.site == "site-1" and accepted.detail["tensors"] == 2
    assert rejected.times[0] < accepted.ts, "the forgery reached the executor first"
    assert_job_exact(config, result)


def status_ignored(timeline: Timeline) -> bool:
    event = wait_for_event(
        timeline,
        EventKind.STATUS_IGNORED,
        lambda e: e.detail.get("reason") == "rejected by the status filter"
        and e.detail.get("payload", {}).get("site") == "site-2",
    )
    return event.site == "site-1"


@pytest.mark.slow
@pytest.mark.parametrize("topic", ["PEER_GONE", "END"])
def test_a_forged_status_claiming_another_site_is_ignored_by_the_exchanger(topic: str) -> None:
    config, result, attack = run_job_under_attack(
        topic, {"site": "site-2", "reason": "forged"}, status_ignored
    )
    assert attack.errors == [] and attack.report is not None and attack.report["sent"]
    assert attack.evidence, "the exchanger logged the forged status as ignored"
    stops = [
        e
        for e in result.timeline.events(EventKind.STATUS_EVENT, site="site-1")
        if e.detail.get("handler") == "site-1-round-1"
        and e.detail.get("topic") == topic
        and e.detail.get("reason") == "forged"
    ]
    assert stops == [], f"the forged {topic} stopped the round's handler"
    assert_job_exact(config, result)
