"""A training-process stand-in: leads its own session, starts a worker child, announces
it, then waits for a line on stdin and ends: by raising on end of input, normally on a line.

Its watchdog thread checks once an hour, so when it ends after its client died, only
``group_dies_with_client``'s way out can take the worker child with it.
"""

from __future__ import annotations

import subprocess
import sys

from reference_impl.watchdog import group_dies_with_client

with group_dies_with_client(interval=3600.0):
    worker = subprocess.Popen([sys.executable, "-c", "import signal\nwhile True: signal.pause()"])
    print(f"worker pid {worker.pid}", flush=True)
    if not sys.stdin.readline():
        raise SystemExit("end of input")
