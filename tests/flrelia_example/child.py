"""The example's training process: train, publish, wait until downloaded, exit."""

import json
import os
import sys
from pathlib import Path

import numpy as np
import xxhash

from pytest_flrelia.contract import seams
from pytest_flrelia.contract.events import training_lane
from pytest_flrelia.contract.timeline import EventKind, Timeline


def main() -> int:
    site, round = os.environ["EXAMPLE_SITE"], int(os.environ["EXAMPLE_ROUND"])
    timeline = Timeline(training_lane(site), Path(os.environ["EXAMPLE_EVENTS"]))
    tensor = np.full(int(os.environ["EXAMPLE_SIZE"]), float(round), dtype=np.float64)
    path = Path(os.environ["EXAMPLE_OUT"])
    path.write_bytes(tensor.tobytes())
    digest = xxhash.xxh3_64_hexdigest(tensor.tobytes())
    timeline.record(EventKind.TENSOR_SERVED, site=site, round=round, name="w",
                    bytes_digest=digest)
    timeline.record(EventKind.RESULT_SENT, site=site, round=round, tensors=1)
    print(json.dumps({"path": str(path), "digest": digest}), flush=True)
    sys.stdin.readline()  # the gate: the launcher writes a line once it downloaded
    timeline.record(EventKind.GATE_OPEN, site=site, round=round)
    timeline.record(EventKind.EXIT, site=site, round=round, returncode=0)
    return 0


if __name__ == "__main__":
    seams.exit_process(main())  # at once: no interpreter shutdown between exit and reap
