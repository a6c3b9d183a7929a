"""Names shared by the runner and the training processes it has NVFlare launch.

Nothing here imports nvflare or the harness: the child imports it before anything else.
"""

from __future__ import annotations

RUN_ENV = "FLRELIA_NVFLARE_RUN"
"""Path of the run file (:mod:`.codec`): the job, its faults, the runner's options."""
ROUND_ENV = "FLRELIA_NVFLARE_ROUND"
"""The round the launcher starts a process for; set under :data:`LAUNCH_LOCK` around the
launch, since ``SubprocessLauncher`` copies ``os.environ`` for its child."""
PIPE_ENV = "FLRELIA_NVFLARE_PIPE"
"""``file``: the entry point's factory builds the target with FilePipe instead of CellPipe."""
CHILD_MODULE = "pytest_flrelia.targets.nvflare.child.train"
RUNNER_MODULE = "pytest_flrelia.targets.nvflare.runner"

RUNNER_EVENTS = "runner.jsonl"
"""The runner's own events file in the events dir (server and client lanes)."""
RESULT_FILE = "result.json"
MODEL_FILE = "model.npz"
RUNNER_LOG = "runner.log"
"""Everything the runner and its children print: NVFlare's own log lines."""
LOGS_ENV = "FLRELIA_NVFLARE_LOGS"
"""A directory: each run's ``runner.log`` is kept there (the run's own dir is removed)."""
TRAIN_TASK = "train"
VALIDATE_TASK = "validate"
TOKEN = "flrelia"
"""The CellPipe token: a site's pipe cells are ``site-N_flrelia_passive`` / ``_active``."""
HEARTBEAT_FLOOR = 5.0
"""NVFlare's child sends a heartbeat every 5 s (hard-coded); a ``heartbeat_timeout``
not above it makes the pipe handler see a live peer as gone."""
HEARTBEAT_MIN_TIMEOUT = 30.0
"""The heartbeat timeout this target uses at least.  NVFlare's child sends a heartbeat
every 5 s, and the CJ's pipe handler counts its timeout from its own start, before the
child exists: a child slower to start than the timeout is declared gone.  Under load a
child took 8-15 s to start (2 cores, load average 12-40), so 10 s failed healthy runs."""
DOWNLOAD_MONITOR_PERIOD = 5.0
"""``DownloadService._monitor_tx`` looks at its transactions, then sleeps 5 s: a child's
download gate opens only at such a look, so one period after the transaction began at
the soonest when the pull is quick (a fresh one-round child starts the monitor with its
first transaction)."""
PRE_INIT_FLOOR = 30.0
"""The external pre-init timeout this target uses at least: a fresh NVFlare child imports
nvflare and joins CellNet before its ``init()``; on 2 cores under load (load average 12)
that import alone took 6 s of wall time, and four children start at once under ``-n 2``."""


def events_file(site: str, pid: int) -> str:
    """The file a training process of ``site`` writes its events to (in the events dir)."""
    return f"train-{site}-{pid}.jsonl"


def active_fqcn(site: str) -> str:
    """The FQCN of a site's child-side pipe cell: where the server downloads from."""
    return f"{site}_{TOKEN}_active"


def site_of_fqcn(fqcn: str) -> str | None:
    """``site-2_flrelia_active`` -> ``site-2``; ``None`` for a cell of no site."""
    suffix = f"_{TOKEN}_active"
    return fqcn[: -len(suffix)] if fqcn.endswith(suffix) else None
