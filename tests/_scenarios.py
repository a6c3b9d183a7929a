"""Scenario texts more than one test runs."""

STUCK_PAST_BOUND = """\
name: stuck-past-bound
description: Round 1's process hangs on its way out; round 2 waits for it past the bound.
job:
  rounds: 2
  tensors: {count: 1, size: 16KiB}
  timeouts: {download_complete: 30s, stop_wait: 30s}
faults:
  - {fault: stuck_exit, round: 1}
  - {fault: orphan_child}
expect:
  within: 1500ms
"""
"""Round 1's process never exits and leaves a child behind: the run passes its bound
and the harness must end it and everything it started."""
