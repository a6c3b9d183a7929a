"""The "Fault catalog" section of ``docs/faults.md``, rendered from the catalog.

:data:`~pytest_flrelia.scenario.catalog.CATALOG` declares what a scenario may write;
:mod:`pytest_flrelia.targets.reference.faults` decides how each fault is injected.  The page
needs both, so the mechanics sentences live here beside the renderer, and a
test keeps the page equal to :func:`render_catalog`: code and docs cannot
drift.  ``python -m pytest_flrelia.tools.catalog_docs`` prints the section;
``--write docs/faults.md`` replaces it in place.
"""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import yaml

from pytest_flrelia.scenario.catalog import CATALOG, SCOPE_KEYS, FaultType, Param
from pytest_flrelia.targets.reference.faults import AT_FAILPOINTS, STALE_DELIVERY_TIMEOUT

SECTION_HEADING = "## Fault catalog"
"""Where the generated section starts; everything from it to the end is generated."""
WRAP_WIDTH = 90
_GLUE = "\x00"
"""Stands in for a space inside a code span while a paragraph is filled."""


@dataclass(frozen=True)
class Mechanics:
    """How one fault is injected, in words a user can match against the timeline."""

    how: str


_LIVE_ONCE = (
    " A live action fires once per run, at the first matching event: without `site` it "
    "strikes whichever site gets there first."
)

MECHANICS: Mapping[str, Mechanics] = MappingProxyType(
    {
        "delayed_download": Mechanics(
            "In-process failpoint `server.before_download[site=S,round=R]=sleep(<delay in ms>)`:"
            " the server's download thread for that site sleeps before it pulls the first"
            " tensor, while the training process waits in its download gate. Timeline: a"
            " `fault` event in the `harness` lane, then `download_start` `delay` later."
        ),
        "early_sigterm": Mechanics(
            "Subprocess failpoint `<at point>=1*signal(<signal>)`, e.g."
            " `agent.after_result_sent=1*signal(SIGTERM)`: the training process sends the"
            " signal to itself through `seams.kill` (see the `at` points above). The count is"
            " per process: without `round`, every fresh per-round process is hit once."
            " Timeline: a `fault` event in the `train-<site>` lane."
        ),
        "stale_peer_gone": Mechanics(
            "Live action: at the client's `task_sent` of `round`, the harness calls"
            " `notify_status(PEER_GONE)` on the newest retired pipe handler of `from_round`"
            " of that site's task exchanger (an `error` event if there is none). The"
            ' exchanger must ignore it (`status_ignored`, reason "handler is not current").'
            " Timeline: a `fault` event." + _LIVE_ONCE
        ),
        "stuck_exit": Mechanics(
            "Subprocess failpoint `agent.before_exit[site=S,round=R]=hang` (mode `hang`: the"
            " exiting thread blocks) or `=call(linger_thread)` (mode `thread`: it starts a"
            " non-daemon thread that never ends and joins it). Either way the process never"
            " says END nor reaches its exit seam after the gate: the deferred stop waits its"
            " full `stop_wait`, then stops the process group (SIGTERM, SIGKILL after"
            " `stop_grace`). With `launch_once: true` the point is reached only when the"
            " script ends, at the end of the job. Timeline: a `fault` event in the"
            " `train-<site>` lane, later `signal_sent`."
        ),
        "slow_start": Mechanics(
            "Subprocess failpoint `agent.before_init[site=S,round=R]=sleep(<delay in ms>)`:"
            " the process sleeps before it connects its pipe and calls `init()`; the executor"
            " waits for it up to `pre_init`. Timeline: a `fault` event, `init` `delay`"
            " after `launch`."
        ),
        "crash": Mechanics(
            "Subprocess failpoint `<at point>=1*exit(<code>)`: the process ends through"
            " `seams.exit_process(code)` without saying END. Before its result is sent, the"
            ' round fails with "training process ended"; after, the download fails.'
            " Timeline: a `fault` event, then the launcher's `reaped` with the code."
        ),
        "heartbeat_loss": Mechanics(
            "Subprocess failpoint `pipe_handler.before_heartbeat[site=S]=hang` (no `duration`)"
            " or `=1*sleep(<duration in ms>)`: the agent's heartbeat thread blocks before its"
            " next heartbeat. Peer-gone detection lives in that thread, so the agent stops"
            ' watching the client too. The client reports PEER_GONE ("nothing heard from'
            ' the peer") when nothing else arrives for `heartbeat`: when a round, or the gap'
            " between rounds of a `launch_once` process, outlasts the heartbeat timeout."
            " Timeline: a `fault` event, then a client `status_event`."
        ),
        "broken_pipe": Mechanics(
            "Subprocess failpoint `<at point>=1*call(break_pipe)`: the agent closes its pipe"
            " socket and the calling thread blocks for good; the process stays alive and"
            " silent. The client's next heartbeat hits the broken pipe, its handler reports"
            ' PEER_GONE and stops, `execute()` fails with "pipe handler stopped", and the'
            " process is stopped by signal. Timeline: a `fault` event."
        ),
        "corrupt_chunk": Mechanics(
            "Subprocess failpoint `download.corrupt_chunk.<chunk>[site=S,round=R]=<times>*return`"
            " (`<chunk>` is the number or `last`: `download.corrupt_chunk.3`,"
            " `download.corrupt_chunk.last`): the download service flips one bit in the"
            " middle of that chunk of a tensor after computing its digest, for up to `times`"
            " chunks per training process. The downloader rejects the chunk by its digest"
            " (`download_retry` naming its offset) and resumes from it, so no corrupt byte is"
            " aggregated; the rest of that stream is sent intact, so each corrupted chunk is"
            " exactly one failed attempt. Needs `download_retries >= times` to succeed; a"
            " `chunk` past a tensor's last chunk never fires."
            " Timeline: one `fault` event per corrupted chunk."
        ),
        "slow_aggregation": Mechanics(
            "In-process failpoint `server.before_aggregate[round=R]=sleep(<delay in ms>)`:"
            " once every download of the round is done, the server sleeps before it"
            " averages. Timeline: a `fault` event, `aggregated` `delay` after the last"
            " `download_done`."
        ),
        "aux_event": Mechanics(
            "Live action: at the client's `task_sent` (`at: during_execute`, the default:"
            " `execute()` waits for the result), `pipe_cleared` (`at: launch`: `execute()`"
            " prepares the round's pipe handler, before the process starts) or `init_seen`"
            " (`at: init`: the fresh process called `init()`, the task is not sent yet),"
            ' the harness calls `on_aux_event("aux-task")` on that site\'s task exchanger'
            " from inside `execute()`. The busy window is the whole `execute()`, as"
            " NVFlare's `_executing` guard: the exchanger must defer the event"
            ' (`status_ignored`, reason "execute() is running") instead of replacing the'
            " pipe handler. `at: init` needs a round that launches a process (every round"
            " with `launch_once: false`, round 1 otherwise). Timeline: a `fault` event."
            + _LIVE_ONCE
        ),
        "stop_error": Mechanics(
            "In-process failpoint `executor.deferred_stop.before_stop[site=S,round=R]="
            "1*raise(RuntimeError, injected stop_task failure)`: the deferred-stop thread"
            " raises just before `stop_task()`. The round boundary must open anyway"
            " (`deferred_stop_done`), and the next round stops the old process itself."
            " Per-round processes only (`launch_once: false`, which has a deferred stop);"
            " the count is over the whole run, all sites. Timeline: a `fault` event in"
            " the `harness` lane."
        ),
        "slow_stop": Mechanics(
            "In-process failpoint `executor.deferred_stop.after_wait[site=S,round=R]="
            "sleep(delay)`: after the deferred-stop thread saw the process exit"
            " (`exit_seen`), it waits `delay` before it reaps the process and opens the round"
            " boundary, as a deferred stop that polls once a second would. The launcher still"
            " holds the exited process meanwhile: the next round's launch must wait for the"
            " boundary (`round_boundary_wait`), not find the old process. Per-round processes"
            " only (`launch_once: false`, which has a deferred stop). Timeline: a `failpoint`"
            " event in the `harness` lane."
        ),
        "stale_pipe_message": Mechanics(
            "Live action: at `deferred_stop_done` of round `round - 1`, the harness opens a"
            " second authenticated connection to that site's client pipe with the launch"
            f" secret, sends `topic`, waits up to {STALE_DELIVERY_TIMEOUT:g} s until it sits"
            " unread in the pipe, and disconnects. The next round's handler must not read it:"
            " the pipe is cleared"
            " (`pipe_cleared`, `dropped` >= 1). Per-round processes only: with"
            " `launch_once: true` there is no deferred stop and the fault never fires."
            " Timeline: a `fault` event." + _LIVE_ONCE
        ),
        "ignore_sigterm": Mechanics(
            "Script behaviour `FLRELIA_SCRIPT_BEHAVIOUR=ignore_sigterm[site=S,round=R]`: a"
            " training process its scope matches installs a SIGTERM handler that does"
            " nothing but record, at the first SIGTERM, a `fault` event (\"ignored SIGTERM\"),"
            " so a stop must escalate to SIGKILL after `stop_grace`. Timeline: `signal_sent`"
            " SIGTERM, the `fault` event in the `train-<site>` lane, then SIGKILL."
        ),
        "orphan_child": Mechanics(
            "Script behaviour `FLRELIA_SCRIPT_BEHAVIOUR=spawn_child[site=S,round=R]`: when it"
            " starts, a training process its scope matches starts a child (`python -c`,"
            " waiting in `signal.pause()`) that inherits its stdout and stderr and stays in"
            " its process group, like a data loader. A stop must kill the whole group and"
            " never wait on the output pipe; the child must not outlive the run. Timeline: a"
            " `fault` event with the child's pid, later `signal_sent` SIGKILL to the group."
        ),
    }
)
"""How each catalog fault is injected (see :mod:`pytest_flrelia.targets.reference.faults`),
by name."""

_KIND_NAMES: Mapping[str, str] = {
    "duration": "duration",
    "int": "integer",
    "float": "number",
    "bool": "boolean",
    "chunk": "chunk number >= 1 or `last`",
}


def render_catalog() -> str:
    """The markdown of the whole catalog section, from its heading to the end."""
    missing = sorted(set(CATALOG) - set(MECHANICS))
    if missing:
        raise KeyError(f"no mechanics written for fault(s) {', '.join(missing)} in catalog_docs")
    parts = [_intro(), *(_fault_section(f, MECHANICS[f.name]) for f in CATALOG.values())]
    return "\n".join(parts)


def replace_section(document: str, section: str) -> str:
    """``document`` with everything from :data:`SECTION_HEADING` on replaced by ``section``."""
    head, found, _ = document.partition(SECTION_HEADING + "\n")
    if not found:
        raise ValueError(f"no line {SECTION_HEADING!r} in the document")
    return head + section


def current_section(document: str) -> str:
    """What ``document`` holds from :data:`SECTION_HEADING` to the end ("" if none)."""
    _, found, rest = document.partition(SECTION_HEADING + "\n")
    return found + rest if found else ""


def _intro() -> str:
    rows = "".join(f"| [`{f.name}`](#{f.name}) | {f.summary} |\n" for f in CATALOG.values())
    at_rows = "".join(f"| `{at}` | `{point}` |\n" for at, point in AT_FAILPOINTS.items())
    return (
        f"{SECTION_HEADING}\n\n"
        "Every fault a scenario can name, with its parameters, where and how the harness\n"
        "injects it, and the invariants it leaves out of a scenario's defaults. Generated\n"
        "from `pytest_flrelia.scenario.catalog.CATALOG` by\n"
        "`python -m pytest_flrelia.tools.catalog_docs --write docs/faults.md`; a test fails\n"
        "when this page and the catalog differ.\n\n"
        "Besides its parameters a fault takes `site` (`site-N`, default: every site) and\n"
        "`round` (default: every round) where its entry says so (the loader refuses a\n"
        "scope key a fault does not take), and `optional: true` (see below).\n"
        "*Subprocess* failpoints are passed to the training processes in\n"
        "`FLRELIA_FAILPOINTS`; *in-process* ones act in the harness process (server and\n"
        "clients); *live actions* act on the running executors when a timeline event is\n"
        "recorded; *script behaviours* switch the default training script's misbehaviour on\n"
        "through `FLRELIA_SCRIPT_BEHAVIOUR`. In a failpoint, `[site=S,round=R]` stands for\n"
        "the scope keys the entry gives, and `@FAULT#ID` tags the entry with the fault\n"
        "and its position in the scenario's `faults`.\n\n"
        "Every fault records a `fault` event (`fault`, `fault_id`, `did`) at the moment it\n"
        "acts, never when it is planned; each entry's **Delivered** says what counts as\n"
        "acting. The `faults_delivered` invariant fails a run in which a fault never\n"
        "acted, unless its entry says `optional: true`.\n\n"
        "| fault | what happens |\n|---|---|\n"
        f"{rows}\n"
        "The faults with an `at` parameter strike at one of these subprocess failpoints:\n\n"
        "| `at` | failpoint |\n|---|---|\n"
        f"{at_rows}"
    )


def _fault_section(fault: FaultType, mechanics: Mechanics) -> str:
    return (
        f"### {fault.name}\n\n"
        f"{_wrap(_sentence(fault.summary))}\n\n"
        f"{_param_table(tuple(fault.params.values()))}\n"
        f"{_wrap('**Scope:** ' + _scopes(fault))}\n\n"
        f"{_wrap('**Mechanics:** ' + mechanics.how)}\n\n"
        f"{_wrap('**Delivered:** ' + _sentence(fault.delivered))}\n\n"
        f"**Voids:** {_voids(fault.voids)}\n\n"
        + (
            "**Needs** one process per round (`launch_once: false`): the loader refuses it "
            "otherwise.\n\n"
            if fault.per_round_only
            else ""
        )
        + f"```yaml\n{_example(fault.example)}```\n"
    )


def _wrap(text: str) -> str:
    """Fill to :data:`WRAP_WIDTH`, never breaking inside a `code span`."""
    glued = re.sub(r"`[^`]*`", lambda m: m.group(0).replace(" ", _GLUE), text)
    filled = textwrap.fill(glued, WRAP_WIDTH, break_long_words=False, break_on_hyphens=False)
    return filled.replace(_GLUE, " ")


def _sentence(text: str) -> str:
    """A summary as a sentence; one that starts with an identifier keeps its case."""
    first = text.split(maxsplit=1)[0] if text else ""
    if not any(mark in first for mark in "_()"):
        text = text[:1].upper() + text[1:]
    return text if text.endswith(".") else text + "."


def _param_table(params: Sequence[Param]) -> str:
    if not params:
        return "No parameters.\n"
    lines = [
        "| parameter | kind | required / default | meaning |",
        "|---|---|---|---|",
        *(f"| `{p.name}` | {_kind(p)} | {_default(p)} | {p.doc} |" for p in params),
    ]
    return "\n".join(lines) + "\n"


def _kind(param: Param) -> str:
    if param.kind in ("choice", "signal"):
        choices = ", ".join(f"`{c}`" for c in param.choices)
        return f"signal: {choices}" if param.kind == "signal" else f"one of {choices}"
    kind = _KIND_NAMES[param.kind]
    if param.minimum is not None:
        kind += f" >= {param.minimum:g}"
    return kind


def _default(param: Param) -> str:
    if param.required:
        return "required"
    if param.default is None:
        return "optional"
    if isinstance(param.default, bool):
        return f"`{'true' if param.default else 'false'}`"
    return f"`{param.default}`"


def _scopes(fault: FaultType) -> str:
    applied = ", ".join(f"`{key}`" for key in fault.scopes) or "none"
    refused = [f"`{key}`" for key in SCOPE_KEYS if key not in fault.scopes]
    note = fault.scope_note
    if refused and note:
        note = f"{' and '.join(refused)} refused: {note}"
    notes = [note] if note else []
    if fault.round_required:
        notes.insert(0, f"`round` is required, at least {fault.min_round}")
    return f"{applied} ({'; '.join(notes)})." if notes else f"{applied}."


def _voids(voids: Sequence[str]) -> str:
    if not voids:
        return "nothing; every default invariant applies."
    names = ", ".join(f"`{name}`" for name in voids)
    return f"{names}, left out of a scenario's default invariants."


def _example(example: Mapping[str, object]) -> str:
    body = yaml.safe_dump([dict(example)], sort_keys=False, default_flow_style=False)
    return "faults:\n" + "".join(f"  {line}\n" for line in body.splitlines())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pytest_flrelia.tools.catalog_docs",
        description="Print the fault-catalog section of docs/faults.md, or write it in place.",
    )
    parser.add_argument(
        "--write",
        metavar="PATH",
        type=Path,
        help=f"replace everything from {SECTION_HEADING!r} to the end of PATH",
    )
    args = parser.parse_args(argv)
    section = render_catalog()
    if args.write is None:
        sys.stdout.write(section)
        return 0
    path: Path = args.write
    path.write_text(replace_section(path.read_text(), section))
    return 0


if __name__ == "__main__":
    sys.exit(main())
