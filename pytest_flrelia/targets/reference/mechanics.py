"""How the reference target delivers each fault of the catalog, in words a user can
match against the timeline: the ``mechanics`` of its ``TargetInfo.faults``, which
``docs/faults.md`` shows (``python -m pytest_flrelia.tools.catalog_docs``).

Beside :mod:`.faults` because it describes what that module builds; a test keeps
each sentence naming the failpoints, behaviours and live actions the plan injects.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from pytest_flrelia.targets.reference.child_faults import BREAK_PIPE, LINGER_THREAD
from pytest_flrelia.targets.reference.faults import STALE_DELIVERY_TIMEOUT

_LIVE_ONCE = (
    " A live action fires once per run, at the first matching event: without `site` it "
    "strikes whichever site gets there first."
)

MECHANICS: Mapping[str, str] = MappingProxyType(
    {
        "delayed_download": (
            "In-process failpoint `server.before_download[site=S,round=R]=sleep(<delay in ms>)`:"
            " the server's download thread for that site sleeps before it pulls the first"
            " tensor, while the training process waits in its download gate. Timeline: a"
            " `fault` event in the `harness` lane, then `download_start` `delay` later."
        ),
        "early_sigterm": (
            "Subprocess failpoint `<at point>=1*signal(<signal>)`, e.g."
            " `agent.after_result_sent=1*signal(SIGTERM)`: the training process sends the"
            " signal to itself through `seams.kill` (see the `at` points above). The count is"
            " per process: without `round`, every fresh per-round process is hit once."
            " Timeline: a `fault` event in the `train-<site>` lane."
        ),
        "stale_peer_gone": (
            "Live action: at the client's `task_sent` of `round`, the harness calls"
            " `notify_status(PEER_GONE)` on the newest retired pipe handler of `from_round`"
            " of that site's task exchanger (an `error` event if there is none). The"
            ' exchanger must ignore it (`status_ignored`, reason "handler is not current").'
            " Timeline: a `fault` event." + _LIVE_ONCE
        ),
        "stuck_exit": (
            "Subprocess failpoint `agent.before_exit[site=S,round=R]=hang` (mode `hang`: the"
            f" exiting thread blocks) or `=call({LINGER_THREAD})` (mode `thread`: the child-side"
            " fault code, installed through `FLRELIA_AGENT_HOOKS`, starts a non-daemon thread"
            " that never ends and joins it). Either way the process never"
            " says END nor reaches its exit seam after the gate: the deferred stop waits its"
            " full `stop_wait`, then stops the process group (SIGTERM, SIGKILL after"
            " `stop_grace`). With `launch_once: true` the point is reached only when the"
            " script ends, at the end of the job. Timeline: a `fault` event in the"
            " `train-<site>` lane, later `signal_sent`."
        ),
        "slow_start": (
            "Subprocess failpoint `agent.before_init[site=S,round=R]=sleep(<delay in ms>)`:"
            " the process sleeps before it connects its pipe and calls `init()`; the executor"
            " waits for it up to `pre_init`. Timeline: a `fault` event, `init` `delay`"
            " after `launch`."
        ),
        "crash": (
            "Subprocess failpoint `<at point>=1*exit(<code>)`: the process ends through"
            " `seams.exit_process(code)` without saying END. Before its result is sent, the"
            ' round fails with "training process ended"; after, the download fails.'
            " Timeline: a `fault` event, then the launcher's `reaped` with the code."
        ),
        "heartbeat_loss": (
            "Subprocess failpoint `pipe_handler.before_heartbeat[site=S]=hang` (no `duration`)"
            " or `=1*sleep(<duration in ms>)`: the agent's heartbeat thread blocks before its"
            " next heartbeat. Peer-gone detection lives in that thread, so the agent stops"
            ' watching the client too. The client reports PEER_GONE ("nothing heard from'
            ' the peer") when nothing else arrives for `heartbeat`: when a round, or the gap'
            " between rounds of a `launch_once` process, outlasts the heartbeat timeout."
            " Timeline: a `fault` event, then a client `status_event`."
        ),
        "broken_pipe": (
            f"Subprocess failpoint `<at point>=1*call({BREAK_PIPE})`: the child-side fault code"
            " (installed through `FLRELIA_AGENT_HOOKS`) closes the agent's pipe socket and the"
            " calling thread blocks for good; the process stays alive and silent (the fault"
            " keeps the agent from ending it on the PEER_GONE it caused). The client's next"
            " heartbeat hits the broken pipe, its handler reports"
            ' PEER_GONE and stops, `execute()` fails with "pipe handler stopped", and the'
            " process is stopped by signal. Timeline: a `fault` event."
        ),
        "corrupt_chunk": (
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
        "slow_aggregation": (
            "In-process failpoint `server.before_aggregate[round=R]=sleep(<delay in ms>)`:"
            " once every download of the round is done, the server sleeps before it"
            " averages. Timeline: a `fault` event, `aggregated` `delay` after the last"
            " `download_done`."
        ),
        "aux_event": (
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
        "stop_error": (
            "In-process failpoint `executor.deferred_stop.before_stop[site=S,round=R]="
            "1*raise(RuntimeError, injected stop_task failure)`: the deferred-stop thread"
            " raises just before `stop_task()`. The round boundary must open anyway"
            " (`deferred_stop_done`), and the next round stops the old process itself."
            " Per-round processes only (`launch_once: false`, which has a deferred stop);"
            " the count is over the whole run, all sites. Timeline: a `fault` event in"
            " the `harness` lane."
        ),
        "slow_stop": (
            "In-process failpoint `executor.deferred_stop.after_wait[site=S,round=R]="
            "sleep(delay)`: after the deferred-stop thread saw the process exit"
            " (`exit_seen`), it waits `delay` before it reaps the process and opens the round"
            " boundary, as a deferred stop that polls once a second would. The launcher still"
            " holds the exited process meanwhile: the next round's launch must wait for the"
            " boundary (`round_boundary_wait`), not find the old process. Per-round processes"
            " only (`launch_once: false`, which has a deferred stop). Timeline: a `failpoint`"
            " event in the `harness` lane."
        ),
        "stale_pipe_message": (
            "Live action: at `deferred_stop_done` of round `round - 1`, the harness opens a"
            " second authenticated connection to that site's client pipe with the launch"
            f" secret, sends `topic`, waits up to {STALE_DELIVERY_TIMEOUT:g} s until it sits"
            " unread in the pipe, and disconnects. The next round's handler must not read it:"
            " the pipe is cleared"
            " (`pipe_cleared`, `dropped` >= 1). Per-round processes only: with"
            " `launch_once: true` there is no deferred stop and the fault never fires."
            " Timeline: a `fault` event." + _LIVE_ONCE
        ),
        "ignore_sigterm": (
            "Script behaviour `FLRELIA_SCRIPT_BEHAVIOUR=ignore_sigterm[site=S,round=R]`: a"
            " training process its scope matches installs a SIGTERM handler that does"
            " nothing but record, at the first SIGTERM, a `fault` event (\"ignored SIGTERM\"),"
            " so a stop must escalate to SIGKILL after `stop_grace`. Timeline: `signal_sent`"
            " SIGTERM, the `fault` event in the `train-<site>` lane, then SIGKILL."
        ),
        "orphan_child": (
            "Script behaviour `FLRELIA_SCRIPT_BEHAVIOUR=spawn_child[site=S,round=R]`: when it"
            " starts, a training process its scope matches starts a child (`python -c`,"
            " waiting in `signal.pause()`) that inherits its stdout and stderr and stays in"
            " its process group, like a data loader. A stop must kill the whole group and"
            " never wait on the output pipe; the child must not outlive the run. Timeline: a"
            " `fault` event with the child's pid, later `signal_sent` SIGKILL to the group."
        ),
    }
)
"""Fault name -> how the reference target delivers it (its ``FaultSupport.mechanics``)."""


__all__ = ["MECHANICS"]
