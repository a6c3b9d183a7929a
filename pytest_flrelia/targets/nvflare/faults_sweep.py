"""The catalog sweep: one scenario per fault, ``at:`` point and ``launch_once`` mode.

The shipped scenarios exercise the faults the known bugs need; the sweep exercises every
fault of the catalog the same way, so a target's failures outside them show up (issue
#14, item 7).  Each scenario states what a correct launcher does, measured on the
reference target; run the directory against another target and read every failure as a
harness defect or a bug of that target::

    python -m pytest_flrelia.targets.nvflare.faults_sweep /tmp/sweep
    pytest /tmp/sweep -p no:randomly                          # the reference: all pass
    pytest /tmp/sweep --flrelia-target=nvflare -n 2           # the findings

Importing it loads no NVFlare.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import yaml

from pytest_flrelia.scenario.catalog import AT_POINTS, CATALOG

_JOB: Mapping[str, object] = MappingProxyType({
    "sites": 2,
    "rounds": 2,
    "tensors": {"count": 2, "size": "64KiB"},
})

_NO_RESULT = ("before_init", "after_task_received")
"""Points before the result exists: the round cannot complete."""
_RESULT_LOST = ("after_result_sent", "mid_download")
"""Points where the result exists but its tensors cannot all be pulled."""


_SILENCED = ("after_task_received", "mid_download", "after_download")
"""Where ``broken_pipe`` is swept.  Before ``init`` and right after the result the
reference itself does not fail cleanly (``clean_failure``, ``no_premature_stop``): not a
question for another target yet."""
_STUCK_TIMEOUTS = {"download_complete": "1s", "stop_wait": "1s", "download_connect": "1s"}
"""A stuck process is stopped after ``stop_wait``; short, as the shipped scenarios do."""


@dataclass(frozen=True)
class Case:
    """One sweep scenario: a fault entry, the job around it, what a correct run does."""

    name: str
    faults: tuple[Mapping[str, object], ...]
    outcome: str
    within: str
    launch_once: tuple[bool, ...] = (False, True)
    job: Mapping[str, object] = field(default_factory=lambda: dict(_JOB))
    error: str | None = None

    def document(self) -> dict[str, object]:
        doc: dict[str, object] = {
            "name": self.name,
            "description": f"Catalog sweep: {self.name}.",
            "job": dict(self.job),
            "faults": [dict(entry) for entry in self.faults],
        }
        if len(self.launch_once) > 1:
            doc["matrix"] = {"launch_once": list(self.launch_once)}
        else:
            doc["job"] = {**self.job, "launch_once": self.launch_once[0]}
        expect: dict[str, object] = {"outcome": self.outcome, "within": self.within}
        if self.error:
            expect["error"] = self.error
        doc["expect"] = expect
        return doc


def _striking() -> Iterator[Case]:
    for fault in ("early_sigterm", "crash"):
        for at in AT_POINTS:
            entry: dict[str, object] = {"fault": fault, "site": "site-2", "round": 1, "at": at}
            if fault == "early_sigterm":
                entry["signal"] = "SIGTERM"
            if at in _NO_RESULT or at in _RESULT_LOST:
                yield Case(f"sweep-{fault}-{at}", (entry,), "failure", "60s")
            else:  # the round is done; a launch-once process has more rounds to serve
                yield Case(f"sweep-{fault}-{at}-per-round", (entry,), "success", "60s",
                           launch_once=(False,))
                yield Case(f"sweep-{fault}-{at}-launch-once", (entry,), "failure", "60s",
                           launch_once=(True,))
    for at in _SILENCED:  # a silent process is never done: the job fails
        yield Case(f"sweep-broken_pipe-{at}",
                   ({"fault": "broken_pipe", "site": "site-2", "round": 1, "at": at},),
                   "failure", "90s")


def cases() -> Iterator[Case]:
    """Every sweep case; names are unique and stable (a finding cites them)."""
    yield from _striking()
    yield Case("sweep-early_sigkill-after_result_sent",
               ({"fault": "early_sigterm", "site": "site-2", "round": 1,
                 "at": "after_result_sent", "signal": "SIGKILL"},), "failure", "60s")
    yield Case("sweep-delayed_download", (CATALOG["delayed_download"].example,), "success",
               "60s")
    yield Case("sweep-stale_peer_gone", (CATALOG["stale_peer_gone"].example,), "success", "60s")
    for mode in ("hang", "thread"):
        yield Case(f"sweep-stuck_exit-{mode}-per-round",
                   ({"fault": "stuck_exit", "round": 1, "mode": mode},), "success", "90s",
                   launch_once=(False,), job={**_JOB, "timeouts": _STUCK_TIMEOUTS})
        yield Case(f"sweep-stuck_exit-{mode}-launch-once",
                   ({"fault": "stuck_exit", "mode": mode},), "success", "90s",
                   launch_once=(True,), job={**_JOB, "timeouts": _STUCK_TIMEOUTS})
    yield Case("sweep-ignore_sigterm-stuck",
               ({"fault": "stuck_exit", "round": 1}, {"fault": "ignore_sigterm", "round": 1}),
               "success", "90s", launch_once=(False,),
               job={**_JOB, "timeouts": {**_STUCK_TIMEOUTS, "stop_grace": "200ms"}})
    yield Case("sweep-slow_start", ({"fault": "slow_start", "delay": "1s"},), "success", "60s")
    yield Case("sweep-heartbeat_loss-brief",
               ({"fault": "heartbeat_loss", "site": "site-1", "duration": "1s"},), "success",
               "60s")
    for chunk in (1, "last"):
        yield Case(f"sweep-corrupt_chunk-{chunk}",
                   ({"fault": "corrupt_chunk", "site": "site-1", "round": 1, "chunk": chunk},),
                   "success", "60s")
    yield Case("sweep-slow_aggregation", ({"fault": "slow_aggregation", "delay": "1s"},),
               "success", "60s")
    for at in ("during_execute", "launch", "init"):
        yield Case(f"sweep-aux_event-{at}",
                   ({"fault": "aux_event", "site": "site-1", "round": 1, "at": at},),
                   "success", "60s")
    yield Case("sweep-stop_error", ({"fault": "stop_error", "site": "site-1"},), "success",
               "60s", launch_once=(False,))
    yield Case("sweep-slow_stop", ({"fault": "slow_stop", "round": 1, "delay": "1s"},),
               "success", "60s", launch_once=(False,))
    for topic in ("END", "PEER_GONE"):
        yield Case(f"sweep-stale_pipe_message-{topic.lower()}",
                   ({"fault": "stale_pipe_message", "round": 2, "topic": topic},), "success",
                   "60s", launch_once=(False,))
    yield Case("sweep-orphan_child", ({"fault": "orphan_child"},), "success", "60s")


def write(directory: Path) -> list[Path]:
    """Write one ``.scenario.yaml`` per case into ``directory``; return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for case in cases():
        path = directory / f"{case.name}.scenario.yaml"
        path.write_text(yaml.safe_dump(case.document(), sort_keys=False), encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("directory", type=Path, help="where to write the sweep's scenarios")
    args = parser.parse_args(argv)
    for path in write(args.directory):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["Case", "cases", "main", "write"]
