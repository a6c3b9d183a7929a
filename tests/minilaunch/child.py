"""The mini launcher's training process: says hello, trains, serves its tensors, exits.

Run as ``python -m minilaunch.child`` with the environment of
:mod:`minilaunch.protocol`.  Its events go to a JSON-lines file (the parent merges
it when the job ends); it exits by itself once the parent released it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from minilaunch import protocol
from minilaunch.child_faults import ChildFaults
from pytest_flrelia.contract import seams
from pytest_flrelia.contract.events import training_lane
from pytest_flrelia.contract.result import Array
from pytest_flrelia.contract.timeline import EventKind, Timeline


class Child:
    def __init__(self) -> None:
        self.site = os.environ[protocol.SITE_ENV]
        self.round = int(os.environ[protocol.ROUND_ENV])
        self.once = os.environ.get(protocol.ONCE_ENV) == "1"
        self.timeline = Timeline(training_lane(self.site), Path(os.environ[protocol.EVENTS_ENV]))
        self.faults = ChildFaults(
            protocol.load_faults(os.environ[protocol.FAULTS_ENV]), self.timeline, self.site
        )
        self.tensors: dict[str, bytes] = {}
        self.chunk_bytes = 1

    def record(self, kind: EventKind, **detail: Any) -> None:
        self.timeline.record(kind, site=self.site, round=self.round, **detail)

    def main(self) -> int:
        self.faults.at_launch(self.round)
        self.record(EventKind.INIT)
        protocol.send(sys.stdout, {"op": "hello"})
        for line in sys.stdin:
            message = json.loads(line)
            op = message["op"]
            if op == "task":
                if not self.task(message) and not self.once:
                    return self.exit()
            elif op == "pull":
                self.serve(message["name"], int(message["chunk"]))
            elif op == "release":
                self.record(EventKind.GATE_OPEN)
                self.faults.strike("after_download", self.round)
                if not self.once:
                    return self.exit()
            elif op == "bye":
                return self.exit()
        return self.exit(1)  # the parent went away

    def task(self, message: protocol.Message) -> bool:
        """Train and send the result; whether it has tensors to serve."""
        self.round = int(message["round"])
        self.chunk_bytes = int(message["chunk_bytes"])
        self.record(EventKind.TASK_RECEIVED, task_kind=message["kind"])
        self.faults.strike("after_task_received", self.round)
        refs = []
        self.tensors = {}
        if message["kind"] == "train":
            with np.load(message["model"]) as saved:
                model: dict[str, Array] = {name: saved[name] for name in saved.files}
            for name, array in protocol.local_update(model, self.site, self.round).items():
                data = array.tobytes()
                self.tensors[name] = data
                bytes_digest = protocol.digest(data)
                ref = {"name": name, "nbytes": len(data), "dtype": str(array.dtype),
                       "shape": list(array.shape), "bytes_digest": bytes_digest}
                refs.append(ref)
                self.record(EventKind.TENSOR_SERVED, name=name, nbytes=len(data),
                            bytes_digest=bytes_digest)
        self.record(EventKind.RESULT_SENT, tensors=len(refs))
        protocol.send(sys.stdout, {"op": "result", "round": self.round, "tensors": refs})
        self.faults.strike("after_result_sent", self.round)
        if refs:
            self.record(EventKind.GATE_WAIT, tensors=len(refs))
        return bool(refs)

    def serve(self, name: str, chunk: int) -> None:
        data = self.tensors[name]
        chunks = max(1, -(-len(data) // self.chunk_bytes))
        piece = data[(chunk - 1) * self.chunk_bytes : chunk * self.chunk_bytes]
        piece_digest = protocol.digest(piece)
        sent = self.faults.corrupt(piece, chunk, chunks, self.round)
        protocol.send(
            sys.stdout,
            {"op": "chunk", "name": name, "chunk": chunk, "data": protocol.encode(sent),
             "digest": piece_digest},
        )
        if chunk == 1:
            self.faults.strike("mid_download", self.round)

    def exit(self, code: int = 0) -> int:
        self.faults.stuck_exit(self.round)
        self.record(EventKind.EXIT, returncode=code)
        return code


if __name__ == "__main__":
    child = Child()
    code = child.main()
    if child.faults.left_thread:
        sys.exit(code)  # a stuck_exit thread must be able to hold the process open
    seams.exit_process(code)  # at once: no interpreter shutdown between exit and reap
