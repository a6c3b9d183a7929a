"""The one registry of the reference target's variants: the known bugs of SPEC §3.

Each entry is the slug (public, SPEC §8), its KB number, one summary (the line
``--flrelia-known-bugs`` prints and ``docs/bug-zoo.md`` shows) and the
:class:`~reference_impl.job.Runtime` parts it replaces, named by import path.
Parts are resolved only when a variant runs, so this module imports neither the
runtime nor pytest: the scenario loader, the settings and the plugin read the
slugs from here at collection time without loading ``reference_impl``.  The
overriding classes live in :mod:`pytest_flrelia.targets.reference.known_bugs`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

from pytest_flrelia.contract.import_path import load

if TYPE_CHECKING:  # the runtime is imported only when a variant is built
    from reference_impl.job import Runtime

_HERE = "pytest_flrelia.targets.reference.known_bugs"

AGENT_PART = "agent_class"
"""The one part named by import path in :class:`Runtime` too: it is resolved in the
training subprocess, so it stays a string."""


@dataclass(frozen=True)
class KnownBug:
    """One known-bug variant: the correct runtime with ``parts`` replaced."""

    slug: str
    kb: str
    summary: str
    parts: Mapping[str, str]
    """:class:`Runtime` field -> ``module:Class`` of the part that replaces it."""

    def runtime(self) -> Runtime:
        """The variant's :class:`Runtime` (imports the runtime and the overriding classes)."""
        from reference_impl.job import Runtime  # noqa: PLC0415 (collection must not load it)

        parts = {
            name: path if name == AGENT_PART else load(path)
            for name, path in self.parts.items()
        }
        return Runtime().with_parts(**parts)


def _bug(slug: str, kb: str, summary: str, **parts: str) -> KnownBug:
    return KnownBug(
        slug, kb, summary, MappingProxyType({k: f"{_HERE}:{v}" for k, v in parts.items()})
    )


KNOWN_BUGS: Mapping[str, KnownBug] = MappingProxyType(
    {
        bug.slug: bug
        for bug in (
            _bug(
                "sync-stop",
                "KB1",
                "the executor stops the subprocess the moment execute() has its result",
                executor_class="SyncStopExecutor",
            ),
            _bug(
                "launch-once-exits",
                "KB2",
                "the agent exits after the download gate even when one process serves every "
                "round",
                agent_class="LaunchOnceExitsAgent",
            ),
            _bug(
                "deferred-stop-race",
                "KB3",
                "the next launch does not wait for the previous round's deferred stop",
                executor_class="NoRoundBoundaryExecutor",
            ),
            _bug(
                "stale-peer-gone",
                "KB4",
                "the status callback acts on the current handler, not the one that reported: "
                "an old PEER_GONE stops the new round",
                exchanger_class="UnboundStatusExchanger",
            ),
            _bug(
                "fast-path-skips-exit",
                "KB5",
                "with nothing to download, send() returns before the exit logic",
                agent_class="FastPathSkipsExitAgent",
            ),
            _bug(
                "stopped-handler-reused",
                "KB6",
                "a handler stopped by a status event is used again in the next round",
                exchanger_class="ReusedHandlerExchanger",
            ),
            _bug(
                "heartbeat-broken-pipe",
                "KB7",
                "a heartbeat send error escapes its thread; peer-gone is never reported",
                exchanger_class="HeartbeatErrorEscapesExchanger",
            ),
            _bug(
                "deferred-event-not-set",
                "KB8",
                "the round-boundary event is set after stop_task(), not in a finally",
                executor_class="EventNotSetInFinallyExecutor",
            ),
            _bug(
                "validate-waits",
                "KB9",
                "the download gate waits although nothing was published",
                agent_class="ValidateWaitsAgent",
            ),
            _bug(
                "handler-replaced-mid-execute",
                "KB10",
                "an auxiliary event replaces the pipe handler while execute() waits for the "
                "result",
                exchanger_class="HandlerReplacingExchanger",
            ),
            _bug(
                "stale-pipe-message",
                "KB11",
                "the pipe is not cleared when a new handler is created",
                exchanger_class="StaleMessageExchanger",
            ),
            _bug(
                "child-only-sigterm",
                "KB12",
                "stop signals the direct child only, never escalates, and waits until nothing "
                "holds its output",
                stop_strategy="ChildOnlyStopStrategy",
            ),
        )
    }
)
"""Slug -> the known bug, in SPEC §3 order (KB1..KB12)."""

SUMMARIES: Mapping[str, str] = MappingProxyType(
    {slug: bug.summary for slug, bug in KNOWN_BUGS.items()}
)
"""Slug -> its one line: what :attr:`TargetInfo.variants` declares."""


def runtime_for(slug: str | None) -> Runtime:
    """The correct runtime, or the known-bug variant named by ``slug``."""
    if slug is None:
        from reference_impl.job import Runtime  # noqa: PLC0415

        return Runtime()
    return KNOWN_BUGS[slug].runtime()


__all__ = ["KNOWN_BUGS", "SUMMARIES", "KnownBug", "runtime_for"]
