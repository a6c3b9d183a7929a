"""The mini launcher's model oracle: the global model a correct run ends with,
recomputed from the training rule alone (no server code)."""

from __future__ import annotations

import math

import numpy as np

from minilaunch import protocol
from pytest_flrelia.contract.result import Array, JobResult


class MiniOracle:
    def expected_model(self, result: JobResult) -> dict[str, Array] | None:
        if not result.ok:
            return None  # a failed job ends with whatever round it reached
        job = result.config
        model = protocol.initial_model(job)
        for round in range(1, job.rounds + 1):
            if round in job.validate_rounds:
                continue
            sites = job.site_names()
            updates = {site: protocol.local_update(model, site, round) for site in sites}
            weight = math.fsum(protocol.site_number(site) for site in sites)
            model = {
                name: (
                    sum(  # site order, float64: the order the server adds in
                        (protocol.site_number(s) * updates[s][name].astype(np.float64)
                         for s in sites),
                        start=np.zeros(array.size, dtype=np.float64),
                    )
                    / weight
                ).astype(array.dtype)
                for name, array in model.items()
            }
        return model
