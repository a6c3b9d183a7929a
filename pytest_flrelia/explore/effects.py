"""What a correct runtime does under each drawn fault: hold, or fail with a stated error.

A generated schedule must carry an expectation the harness can judge, so the generator
draws only faults whose correct outcome is stated here.  Measured on the reference
runtime (every row below was run on it, 2 sites x 2 rounds, both ``launch_once`` values,
rounds 1 and 2), and worded as the contract a correct launcher keeps:

* *benign* faults: the job completes (delays stay well inside the timeout they race,
  corruptions inside ``download_retries``);
* *fatal* faults: the job fails at the struck site and round, with the error below;
  a fatal fault is pinned to one site and one round, and every other fault of the
  schedule is pinned to an earlier round (a fault due after the job ended would never be
  delivered, and ``faults_delivered`` would fail on a correct runtime);
* everything else is never drawn (:data:`NOT_DRAWN` says why, for docs/explore.md).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

KILLING_SIGNALS: tuple[str, ...] = (
    "SIGTERM",
    "SIGKILL",
    "SIGINT",
    "SIGHUP",
    "SIGQUIT",
    "SIGABRT",
    "SIGUSR1",
    "SIGUSR2",
    "SIGALRM",
)
"""Signals that end a training process (SIGSTOP freezes it instead: not drawn)."""

ABRUPT_SIGNALS: tuple[str, ...] = (
    "SIGTERM",
    "SIGKILL",
    "SIGHUP",
    "SIGUSR1",
    "SIGUSR2",
    "SIGALRM",
)
"""Killing signals that end the process at once (default action: terminate, no core, and
Python installs no handler): the ones a fatal fault sends.  SIGINT becomes a
KeyboardInterrupt in the main thread and SIGQUIT/SIGABRT dump core first; meanwhile the
process's other threads go on, so a download under way may still complete (measured:
three 342-byte chunks sent after the first one's SIGQUIT, one time in three; after
SIGINT every time)."""

PROCESS_KILLERS: tuple[str, ...] = ("crash", "early_sigterm")
"""Faults that end the training process at an ``at:`` point."""


@dataclass(frozen=True)
class Fatal:
    """A fault the correct runtime fails under, and the error it must carry."""

    error: str
    """A template: ``{site}`` is the struck site; the result is a regex (escaped)."""

    def pattern(self, site: str) -> str:
        head, _, tail = self.error.partition("{site}")
        return re.escape(head) + re.escape(site) + re.escape(tail)


ENDED = Fatal("{site}: training process ended")
NO_INIT = Fatal("{site}: external process has not called init")
NO_DOWNLOAD = Fatal("failed to download from {site}")
PIPE_STOPPED = Fatal("{site}: pipe handler stopped")

KILL_AT: Mapping[str, Fatal | None] = MappingProxyType(
    {
        "before_init": NO_INIT,
        "after_task_received": ENDED,
        "after_result_sent": NO_DOWNLOAD,
        "mid_download": NO_DOWNLOAD,
        "after_download": None,
    }
)
"""``crash`` / ``early_sigterm`` by ``at:`` point; ``None``: the round is complete, the
job holds (one process per round; with one process for all rounds only in the last)."""

NOT_DRAWN: Mapping[str, str] = MappingProxyType(
    {
        "broken_pipe at before_init, after_result_sent, after_download": "measured "
        "outcomes differ by launch_once and round (success, a premature-stop verdict, "
        "'pipe handler is running'); no single correct outcome to state",
        "broken_pipe with launch_once in round >= 2": "fails with 'no SubmitUpdate' after "
        "submit_update, not with the pipe error: not stated",
        "crash / early_sigterm at after_download with launch_once before the last round": (
            "the next round's task finds the handler running: an error of the runtime's, "
            "not one the catalog states"
        ),
        "early_sigterm with SIGSTOP": "freezes the process: detected only after the "
        "heartbeat timeout (slow), not drawn",
        "early_sigterm with SIGINT, SIGQUIT or SIGABRT as a fatal fault": "Python's "
        "KeyboardInterrupt, or a core dump first: the process's other threads go on, so "
        "whether the download under way fails is a race (found by exploring the correct "
        "runtime: 'failed to download' did not come)",
        "any fault with launch_once at before_init / slow_start / ignore_sigterm / "
        "orphan_child in round >= 2": "one process serves every round: nothing launches "
        "or inits after round 1, the fault is never delivered",
        "ignore_sigterm without a stuck_exit on the same site and round": "only a forced "
        "stop sends SIGTERM; a process that exits by itself never shows it ignores it",
        "download faults in a validate round or with no tensors": "nothing is downloaded",
        "stale_pipe_message with crash / early_sigterm at after_download, or with "
        "stuck_exit": "a process killed, or stopped by force, says no goodbye, so its "
        "round's handler may still be running when the late message comes and read it: "
        "the message never sits in the pipe, the fault is not delivered (found by "
        "exploring: 6 of 8 runs of one schedule, 2 of 6 of another)",
        "heartbeat_loss forever": "whether the round ends before the heartbeat timeout is a race",
    }
)
"""Combinations the generator never draws, and why (docs/explore.md lists them)."""


__all__ = [
    "ABRUPT_SIGNALS",
    "ENDED",
    "KILLING_SIGNALS",
    "KILL_AT",
    "NOT_DRAWN",
    "NO_DOWNLOAD",
    "NO_INIT",
    "PIPE_STOPPED",
    "PROCESS_KILLERS",
    "Fatal",
]
