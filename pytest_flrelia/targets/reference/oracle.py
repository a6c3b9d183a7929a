"""The reference target's model oracle: the global model a correct run must end with.

It recomputes every round's weighted average from the reference training script's
pure update rule (:func:`~reference_impl.train_script.local_update`,
:func:`~reference_impl.train_script.site_weight`) and the server's initial model,
without any of the server's aggregation code; the judge compares byte for byte.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from pytest_flrelia.contract.job import JobConfig
from pytest_flrelia.contract.result import Array, JobResult
from reference_impl.server import initial_model
from reference_impl.train_script import local_update, site_weight


class ReferenceModelOracle:
    """:class:`~pytest_flrelia.contract.target.ModelOracle` of the reference runtime."""

    def expected_model(self, result: JobResult) -> Mapping[str, Array] | None:
        """Following the server's order of additions (each round's ``aggregation_order``),
        so the result is bit-exact.  Raises ``ValueError`` when an order does not add
        every element of every site exactly once."""
        orders = {r.round: r.aggregation_order for r in result.rounds}
        return expected_global_model(result.config, orders)


AggregationOrder = Mapping[str, Sequence[tuple[str, int, int]]]
"""Per tensor, the ``(site, start, stop)`` element ranges in the order the server added them."""


def expected_global_model(
    config: JobConfig, orders: Mapping[int, AggregationOrder] | None = None
) -> dict[str, Array]:
    """The weighted average of every round, recomputed from the training script's
    pure update rule without any of the server's code.

    Float addition is not associative, so with ``orders`` (a round's
    ``aggregation_order``) the sums follow the server's order of additions and the
    result is bit-exact; without, sites are added in order.  Raises ``ValueError``
    when an order does not add every element of every site exactly once.
    """
    model = initial_model(config)
    for round in range(1, config.rounds + 1):
        if round in config.validate_rounds:
            continue
        sites = config.site_names()
        weights = {site: site_weight(site) for site in sites}
        updates = {site: local_update(model, site, round) for site in sites}
        total_weight = math.fsum(weights.values())
        averaged: dict[str, Array] = {}
        for name, array in model.items():
            order = (orders or {}).get(round, {}).get(name)
            if order is None:
                order = [(site, 0, array.size) for site in sites]
            _check_order(order, sites, array.size, round, name)
            total = np.zeros(array.size, dtype=np.float64)
            for site, start, stop in order:
                values = updates[site][name].reshape(-1)[start:stop]
                total[start:stop] += weights[site] * values
            averaged[name] = (total / total_weight).astype(array.dtype).reshape(array.shape)
        model = averaged
    return model


def _check_order(
    order: Sequence[tuple[str, int, int]], sites: Sequence[str], size: int, round: int, name: str
) -> None:
    for site in sites:
        ranges = sorted((start, stop) for each, start, stop in order if each == site)
        covered = 0
        for start, stop in ranges:
            if start != covered:
                break
            covered = stop
        if covered != size or sum(stop - start for start, stop in ranges) != size:
            raise ValueError(
                f"round {round}: the server added elements {ranges} of {site}'s {name},"
                f" not each of 0..{size} once"
            )
    extra = {each for each, _, _ in order} - set(sites)
    if extra:
        raise ValueError(f"round {round}: the server added {name} of unknown sites {sorted(extra)}")


__all__ = [
    "AggregationOrder",
    "ReferenceModelOracle",
    "expected_global_model",
    # the rule the oracle recomputes from, for a target whose training runs it (nvflare)
    "initial_model",
    "local_update",
    "site_weight",
]
