"""The runner process: one NVFlare job, started by :class:`~.target.NVFlareTarget`.

``python -m pytest_flrelia.targets.nvflare.runner RUN_FILE``.  It is the only process
of the harness side that imports nvflare.  It reads the job and its faults
(:mod:`.codec`), installs the observation (:mod:`.observe`), builds the server stand-in
and every site's CJ (:mod:`.job`), hands them to the fault code
(:func:`~.points.on_parent_start`), runs the rounds and writes ``result.json`` and the
final model (``model.npz``) to the run's dir.  Its events go to ``runner.jsonl`` in the
events dir as they happen; NVFlare's log lines (and its children's output) to stdout.

SIGTERM (the harness's abort) makes it stop: it launches nothing more, triggers the
run's abort signal, ends every site's run and exits; the target kills its process group
after that.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from pytest_flrelia.contract import seams
from pytest_flrelia.contract.events import server_lane
from pytest_flrelia.contract.job import JobConfig
from pytest_flrelia.contract.timeline import EventKind, Timeline
from pytest_flrelia.targets.nvflare import codec, interleave, nv, observe, points, wiring
from pytest_flrelia.targets.nvflare.job import Job, SiteCJ
from pytest_flrelia.targets.nvflare.server import Server

log = logging.getLogger("flrelia.nvflare.runner")

DEFERRED_GRACE = 5.0
"""After the job ended: how long NVFlare's deferred stops may take to stop their processes."""
END_GRACE = 20.0
"""How long ending the sites' runs may take before the runner gives up on them."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _logging() -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def initial_model(job: JobConfig) -> dict[str, Any]:
    from pytest_flrelia.targets.reference.oracle import initial_model as initial  # noqa: PLC0415

    return initial(job)


def run(run_file: Path) -> int:
    job, faults, options = codec.read_run(run_file)
    workdir = Path(str(options["workdir"]))
    events_dir = Path(str(options["events_dir"]))
    os.environ[wiring.RUN_ENV] = str(run_file)
    timeline = Timeline(server_lane(), sink=events_dir / wiring.RUNNER_EVENTS)
    obs = observe.install(timeline)
    interleave.install_requested()
    stopping = obs.stopping
    fed_utils = nv.module("private.fed.utils.fed_utils")
    fed_utils.nvflare_fobs_initialize()
    nv.module("app_common.decomposers.numpy_decomposers").register()
    run_abort = nv.module("apis.signal").Signal()

    def on_sigterm(signum: int, frame: Any) -> None:
        if not stopping.is_set():
            log.warning("SIGTERM: stopping the job (no more launches)")
            stopping.set()
            run_abort.trigger("the harness aborted the run")

    signal.signal(signal.SIGTERM, on_sigterm)
    started = time.monotonic()
    root_url = f"tcp://127.0.0.1:{free_port()}"
    sites = job.site_names()
    server = Server(timeline, root_url, sites)
    server.start()
    cjs = {
        site: SiteCJ(site, job, root_url, workdir, obs, server, run_abort,
                     str(options.get("pipe", "cell")))
        for site in sites
    }
    parent = points.ParentContext(
        job=job, faults=faults,
        sites={s: points.SiteParts(s, cj.executor, cj.launcher, cj.pipe, cj.cell, cj.engine,
                                   cj.fl_ctx) for s, cj in cjs.items()},
        server_cell=server.cell, timeline=timeline, server=server,
    )
    module = points.load_fault_module(points.PARENT_FAULTS_MODULE)
    install = getattr(module, "install", None)
    if install is not None:
        install(parent, list(faults))
    points.start_parent(parent)
    server.timeline.record(EventKind.JOB_START, sites=job.sites, rounds=job.rounds,
                           launch_once=job.launch_once, pipe=options.get("pipe", "cell"))
    for cj in cjs.values():
        cj.start()
    model = initial_model(job)
    error: str | None = None
    rounds: list[Any] = []
    try:
        model, rounds, error = Job(job, server, cjs, run_abort, stopping).run(model)
    except Exception as exc:
        log.exception("the job raised")
        error = f"the job raised {type(exc).__name__}: {exc}"
    finally:
        if error is not None:
            run_abort.trigger(error)
        ended = _end(cjs)
        server.stop()
    site_errors = {s: cj.error for s, cj in cjs.items() if cj.error}
    error = error or next(iter(site_errors.values()), None)
    if ended is not None and error is None:
        error = ended
    ok = error is None
    _await_deferred_stops(DEFERRED_GRACE)
    server.timeline.record(EventKind.JOB_END, ok=ok, error=error)
    np.savez(workdir / wiring.MODEL_FILE, **model)
    (workdir / wiring.RESULT_FILE).write_text(json.dumps({
        "ok": ok,
        "error": error,
        "rounds": [asdict(r) for r in rounds],
        "site_errors": site_errors,
        "seconds": time.monotonic() - started,
    }, default=str))
    _sweep(obs)
    timeline.close()
    return 0


def _end(cjs: dict[str, SiteCJ]) -> str | None:
    """End every site's run (``ABOUT_TO_END_RUN``, ``END_RUN``) from its own thread;
    the reason if one did not end within :data:`END_GRACE`."""
    for cj in cjs.values():
        cj.tasks.put(None)
    deadline = time.monotonic() + END_GRACE
    stuck = []
    for site, cj in cjs.items():
        cj.thread.join(max(0.0, deadline - time.monotonic()))
        if cj.thread.is_alive():
            stuck.append(site)
        else:
            cj.cell.stop()
    return f"the run of {', '.join(stuck)} did not end within {END_GRACE:g}s" if stuck else None


def _await_deferred_stops(timeout: float) -> None:
    """Let NVFlare's deferred-stop threads finish as they would in a CJ that ends its run:
    after ``END_RUN`` each sees ``_job_end`` within its 1 s poll and stops its process."""
    deadline = time.monotonic() + timeout
    for thread in threading.enumerate():
        if thread.name.startswith("deferred-stop-"):
            thread.join(max(0.0, deadline - time.monotonic()))


def _sweep(obs: observe.Observer) -> None:
    """Kill any training process still alive: nothing of the job outlives the runner."""
    for pid in obs.survivors():
        with contextlib.suppress(ProcessLookupError):
            seams.kill(pid, signal.SIGKILL)


def main(argv: list[str]) -> int:
    """Run the job; end the process at once after it (NVFlare's cells leave non-daemon
    threads behind that would hold it open)."""
    _logging()
    code = 2
    try:
        code = run(Path(argv[0]))
    except BaseException:
        log.exception("the runner failed")
    finally:
        seams.exit_process(code)


if __name__ == "__main__":
    threading.current_thread().name = "flrelia-runner"
    sys.exit(main(sys.argv[1:]))
