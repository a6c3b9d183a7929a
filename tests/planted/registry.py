"""The planted bugs: slug -> what it is, the parts it replaces, and a schedule that shows it.

Each ``case`` is the smallest hand-written scenario (a file under ``cases/``) that
fails on the bug, led by ``leading``, and passes on the correct runtime; the tests
pin both, and that every shipped scenario passes on every planted variant.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from pytest_flrelia.contract.import_path import load
from pytest_flrelia.targets.reference.variants import AGENT_PART

CASES = Path(__file__).resolve().parent / "cases"
_BUGS = "planted.bugs"
_CHILD_BUGS = "planted.child_bugs"


@dataclass(frozen=True)
class PlantedBug:
    """One planted variant: the correct runtime with ``parts`` replaced."""

    slug: str
    summary: str
    parts: Mapping[str, str]
    """:class:`~reference_impl.job.Runtime` field -> ``module:Class`` replacing it."""
    trigger: str
    """What a schedule needs to show it (for people and docs/explore.md)."""
    shows: str
    """The check its case fails with (among others), the one that names the defect."""
    neighbours: tuple[str, ...]
    """The shipped scenario nearest the part it breaks (the suite runs it on the bug;
    ``check_shipped`` runs every shipped scenario on it)."""

    @property
    def case(self) -> Path:
        """The hand-written scenario that fails on it and passes on the correct runtime."""
        return CASES / f"{self.slug}.yaml"

    def parts_loaded(self) -> dict[str, object]:
        """The parts as :meth:`Runtime.with_parts` takes them: classes, except the agent,
        which stays an import path (the training subprocess resolves it)."""
        return {
            field: path if field == AGENT_PART else load(path)
            for field, path in self.parts.items()
        }


def _bug(
    slug: str, summary: str, trigger: str, shows: str, neighbours: tuple[str, ...], **parts: str
) -> PlantedBug:
    return PlantedBug(
        slug,
        summary,
        MappingProxyType(
            {k: f"{_CHILD_BUGS if k == AGENT_PART else _BUGS}:{v}" for k, v in parts.items()}
        ),
        trigger,
        shows,
        neighbours,
    )


PLANTED: Mapping[str, PlantedBug] = MappingProxyType(
    {
        bug.slug: bug
        for bug in (
            _bug(
                "escalates-once",
                "only a launcher's first stop that needs SIGKILL sends it; later ones wait on "
                "SIGTERM for ever",
                "ignore_sigterm + stuck_exit on two rounds' processes (launch_once: false)",
                "bounded_stop",
                ("stubborn-process-is-killed",),
                stop_strategy="EscalatesOnceStopStrategy",
            ),
            _bug(
                "aux-before-task",
                "the busy window starts at the task: an aux event after init replaces the "
                "handler execute() holds",
                "aux_event at: init",
                "stale_events_ignored",
                ("aux-event-mid-execute",),
                executor_class="LateBusyWindowExecutor",
                exchanger_class="AuxReplacesExchanger",
            ),
            _bug(
                "keeps-late-peer-gone",
                "the round boundary drops a late END but keeps a late PEER_GONE, which stops "
                "the new round's handler",
                "stale_pipe_message topic: PEER_GONE",
                "stale_events_ignored",
                ("late-goodbye-at-round-boundary",),
                exchanger_class="KeepsPeerGoneExchanger",
            ),
            _bug(
                "older-handler-obeyed",
                "only the previous round's handler is ignored: a stale status from two rounds "
                "back stops the current one",
                "stale_peer_gone with from_round <= round - 2 (rounds >= 3)",
                "stale_events_ignored",
                ("stale-peer-gone[launch_once=false]",),
                exchanger_class="LastRetiredOnlyExchanger",
            ),
            _bug(
                "init-wait-blind",
                "the wait for init() watches the pipe only: a script that dies before init() "
                "costs the whole pre_init wait",
                "crash or early_sigterm at: before_init",
                "within_bound",
                ("crash-mid-training[launch_once=false]",),
                executor_class="InitWaitBlindExecutor",
            ),
            _bug(
                "launch-once-unreaped",
                "a launch-once process that exits by itself at the end of the job is never "
                "reaped: the workers in its group outlive the job",
                "orphan_child with launch_once: true",
                "no_orphans",
                ("late-pull-launch-once",),
                executor_class="UnreapedLaunchOnceExecutor",
            ),
            _bug(
                "resume-last-chunk-early",
                "a download resumed at a tensor's last chunk is served from one chunk "
                "earlier: a corrupt last chunk is never repaired",
                "corrupt_chunk at the last chunk (chunk: last, or its number) of a tensor "
                "of two chunks or more",
                "all_rounds_complete",
                ("corrupt-chunk",),
                agent_class="EarlyResumeAgent",
            ),
            _bug(
                "splits-site-name",
                "the launcher renders its command line from a template and splits it on "
                "whitespace: a site name with a space breaks the command",
                "a site name with a space (job.site_names; a target declaring named_sites)",
                "expectation",
                ("three-sites-mixed-faults[launch_once=true]", "slow-start"),
                launcher_class="TemplateLauncher",
            ),
        )
    }
)
"""Slug -> the planted bug."""

SUMMARIES: Mapping[str, str] = MappingProxyType(
    {slug: bug.summary for slug, bug in PLANTED.items()}
)

__all__ = ["CASES", "PLANTED", "SUMMARIES", "PlantedBug"]
