"""NVFlare's bugs that the shipped scenarios catch, declared per version.

Each is a :class:`~pytest_flrelia.contract.target.KnownIssue`: the plugin reports the
item as a strict xfail judged on its leading check, so an upstream fix turns into a
failing XPASS and this list stays true.  Found by running the shipped suite against the
installed versions (``pytest scenarios/ --flrelia-target=nvflare``); docs/nvflare.md has
a row per issue with its reproduction.
"""

from __future__ import annotations

from pytest_flrelia.contract.target import KnownIssue

DOWNLOAD_PATH = ">=2.7.2rc12,<2.9"
"""The versions with the reverse-PASS_THROUGH download path (the server pulls the arrays)."""
ALL = ">=2.7.1,<2.9"
DEFERRED_STOP = ">=2.7.2,<2.9"
"""The released versions with the deferred stop (#4275's fix); each issue declared for them
was seen on both 2.7.2 and 2.8.3 (rc13 fails those scenarios earlier, on the pull)."""

KNOWN_ISSUES: tuple[KnownIssue, ...] = (
    KnownIssue(
        scenario="stop-error-next-round-prompt",
        check="all_rounds_complete",
        reason="a deferred stop_task that raises leaves the exited process in the "
        "launcher: the next round launches nothing and fails its external setup",
        anchor="docs/nvflare.md#a-failed-deferred-stop-blocks-the-next-launch",
        versions=DEFERRED_STOP,
        details=(
            "The deferred-stop thread logs `Deferred stop_task (train) failed: ...` and "
            "sets its event; `SubprocessLauncher._process` still holds the exited "
            "process, so the next round's `_start_external_process` launches nothing "
            "(`launch_skipped` of the dead pid) and `_wait_external_setup` logs "
            "`External process has not called flare.init and run status becomes "
            "success.` / `Failed external setup for task (train).`: the round fails."
        ),
    ),
    KnownIssue(
        scenario="validate-round",
        check="all_rounds_complete",
        reason="a one-round process's metrics-only result is lost: it exits right after "
        "send_to_peer returned and the CJ never hands the result to execute()",
        anchor="docs/nvflare.md#a-validate-result-is-lost-with-one-process-per-round",
        versions=DEFERRED_STOP,
        details=(
            "With `launch_once=False` over CellPipe, a validate task's reply carries no "
            "tensors, so `FlareAgent._do_submit_result` logs \"no tensors in result — "
            "proceeding immediately\" and calls `os._exit(0)` at once; the executor then "
            "logs `task 'validate' timeout after N secs` and the round fails (seen on "
            "2.7.2: the child's `result_sent` at +36.56 s, its exit 1 ms later, the "
            "timeout 15 s later; 43 s once the execution timeout moved up with the raised "
            "heartbeat timeout)."
        ),
    ),
    KnownIssue(
        scenario="late-goodbye-at-round-boundary",
        check="stale_events_ignored",
        reason="the next round's pipe handler is made (and the pipe cleared) before the "
        "previous round's deferred stop ends: a late END of the old process stops it",
        anchor="docs/nvflare.md#a-late-end-stops-the-next-rounds-handler",
        versions=DEFERRED_STOP,
        details=(
            "`TaskExchanger.handle_event(BEFORE_TASK_EXECUTION)` clears the pipe and "
            "starts a new `PipeHandler`; `execute()` then waits for the previous round's "
            "deferred stop (\"waiting for deferred stop of 'train' to finish\"). An END "
            "that the old process (same FQCN as the new one) left in the pipe meanwhile "
            "reaches the new handler as its own status (`pipe status changed to _END_`): "
            "it stops, the new process's `init()` is never seen, and the round fails with "
            "`External process has not called flare.init within timeout`."
        ),
    ),
    KnownIssue(
        scenario="stubborn-process-is-killed",
        check="bounded_stop",
        reason="SubprocessLauncher's stop sends SIGTERM once and then waits on its log "
        "thread without a bound: a process that ignores SIGTERM is never killed (KB12)",
        anchor="docs/nvflare.md#kb12-the-stop-never-escalates",
        versions=ALL,
        details=(
            "`SubprocessLauncher._stop_external_process` calls `terminate()` and then "
            "`self._log_thread.join()` with no timeout and no SIGKILL: the stop of a "
            "training process that ignores SIGTERM (or leaves a grandchild holding its "
            "stdout) never returns, and the CJ's round boundary hangs with it. The runner "
            "log shows `_stop_external_process: terminating pid=N` and nothing after it."
        ),
    ),
    KnownIssue(
        scenario="three-sites-mixed-faults",
        check="all_rounds_complete",
        reason="its corrupt_chunk: a corrupted download item is detected but never "
        "fetched again, so the round fails (as corrupt-chunk)",
        anchor="docs/nvflare.md#a-corrupted-download-item-is-not-retried",
        versions=DOWNLOAD_PATH,
        details="The same failure as corrupt-chunk, on site-3 (`BadZipFile: Bad CRC-32`).",
    ),
    KnownIssue(
        scenario="corrupt-chunk",
        check="all_rounds_complete",
        reason="a download item whose bytes were corrupted is detected (the npz CRC) but "
        "never fetched again: the round fails instead of recovering",
        anchor="docs/nvflare.md#a-corrupted-download-item-is-not-retried",
        versions=DOWNLOAD_PATH,
        details=(
            "NVFlare serves one item per array and keeps no per-chunk digest; the server's "
            "`ArrayConsumer` fails on the flipped bit (`BadZipFile: Bad CRC-32 for file "
            "'T0.npy'`), `download_object` gives up, and the server logs `failed to "
            "download from site-1_flrelia_active ... exception when consuming data: "
            "BadZipFile`: the round fails."
        ),
    ),
    KnownIssue(
        scenario="failed-deferred-stop-next-round-launches",
        check="all_rounds_complete",
        reason="a deferred stop_task that raises leaves the exited process held in "
        "SubprocessLauncher._process: the next round launches nothing (F1)",
        anchor="docs/nvflare.md#f1-a-failed-deferred-stop-holds-the-dead-process",
        versions=DEFERRED_STOP,
        details=(
            "The sweep's finding F1, on one site: `Deferred stop_task (train) failed`, then "
            "`launch_skipped` of round 1's dead pid and `External process has not called "
            "flare.init and run status becomes success.`; round 2 is `TASK_ABORTED`."
        ),
    ),
    KnownIssue(
        scenario="orphan-child-is-reaped",
        check="bounded_stop",
        reason="SubprocessLauncher stops only its child: a grandchild holding its stdout "
        "keeps the unbounded log-thread join, and with it the stop, from returning (F2)",
        anchor="docs/nvflare.md#f2-an-orphan-keeps-the-stop-from-returning",
        versions=DEFERRED_STOP,
        details=(
            "The sweep's finding F2: `_stop_external_process` terminates the child, never "
            "its process group, then joins `_log_thread` with no timeout while the "
            "orphan still holds the pipe: the stop outlasts `stop_grace` (KB12's hang "
            "without `ignore_sigterm`)."
        ),
    ),
    KnownIssue(
        scenario="slow-init-within-pre-init",
        check="all_rounds_complete",
        reason="the CJ's pipe handler counts the heartbeat timeout from its own start, "
        "before the process is launched: a process slower to call init() than the "
        "heartbeat timeout is declared gone although the pre-init timeout allows it (F3)",
        anchor="docs/nvflare.md#f3-a-slow-init-is-taken-for-a-lost-peer",
        versions=ALL,
        details=(
            "The sweep's finding F3: `PipeHandler._try_read` sets "
            "`_last_heartbeat_received_time` when the handler starts, at "
            "`BEFORE_TASK_EXECUTION`; a child that calls `flare.init()` 36 s later (the "
            "pre-init timeout is 90 s) is declared gone at 30 s (`peer gone: no heartbeat "
            "for 30.1s (timeout=30.0s)`, `pipe status changed to _PEER_GONE_: missing "
            "heartbeat after 30.0 secs`); its `init` reaches a stopped handler and the "
            "round is `TASK_ABORTED` (\"External process has not called flare.init and run "
            "status becomes success.\", \"Failed external setup for task (train).\")."
        ),
    ),
    KnownIssue(
        scenario="sigterm-mid-download",
        check="expectation",
        reason="a pull from a process that died mid-download neither finishes nor fails: "
        "the request in flight waits out download_object's per-request timeout (600 s by "
        "default), since CellNet does not fail it when the peer's connection closes (F4)",
        anchor="docs/nvflare.md#f4-a-pull-from-a-dead-process-waits-out-its-request-timeout",
        versions=DEFERRED_STOP,
        details=(
            "The child dies (SIGTERM) after producing the first item the server asked for, "
            "before it replies. The runner log shows `Connection [CN00004 Not Connected] is "
            "closed` 25 ms after `download_start`, then nothing: `download_object` sent "
            "that request with `per_request_timeout` = the `np_streaming_per_request_timeout` "
            "config var (600 s unless the job or `NVFLARE_NP_STREAMING_PER_REQUEST_TIMEOUT` "
            "sets it; NVFlare itself warns at START_RUN `Timeout inconsistency: "
            "np_min_download_timeout (300s) < np_streaming_per_request_timeout (600.0s)`), "
            "and `CoreCell.state_change` drops the peer's agent without failing the "
            "requests waiting on it. The round hangs until the harness's bound (the run "
            "\"was aborted before the job ended\"); a real server would wait 600 s, then "
            "retry 3 times into `target_unreachable` (2+4+8 s). With "
            "`NVFLARE_NP_STREAMING_PER_REQUEST_TIMEOUT=5` the same run logs `[DOWNLOAD_RETRY] "
            "Request to site-1_flrelia_active timed out after 5.0s`, `[DOWNLOAD_FAILED] Max "
            "retries (3) exhausted` and `failed to download from site-1_flrelia_active` "
            "19 s after the pull started, and the scenario passes."
        ),
    ),
)


__all__ = ["ALL", "DEFERRED_STOP", "DOWNLOAD_PATH", "KNOWN_ISSUES"]
