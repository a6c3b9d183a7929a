"""How much an unconfigured failpoint costs: the price of leaving the calls in production code.

Run ``PYTHONPATH=. python benchmarks/failpoint_bench.py``.  The figure is the raw
per-call cost, loop overhead included (nothing is subtracted), as the runtime pays it.
"""

from __future__ import annotations

import statistics
import timeit

from pytest_flrelia.contract import failpoints

DEFAULT_NUMBER = 200_000
DEFAULT_REPEAT = 7


def measure_failpoint_off_ns(number: int = DEFAULT_NUMBER, repeat: int = DEFAULT_REPEAT) -> float:
    """Median nanoseconds per unconfigured ``failpoint(...)`` call, as the runtime writes it.

    Refuses to run while failpoints are configured: the number would then describe
    the configured path, not the one production pays.
    """
    if failpoints.configured():
        raise RuntimeError(
            "failpoints are configured in this process; clear() them before measuring "
            "the unconfigured cost"
        )
    timer = timeit.Timer(
        'failpoint("agent.after_result_sent", site="site-1", round=2)',
        globals={"failpoint": failpoints.failpoint},
    )
    totals = timer.repeat(repeat=repeat, number=number)
    return statistics.median(totals) / number * 1e9


def main() -> None:
    print(f"failpoint_off_ns: {measure_failpoint_off_ns():.1f}")


if __name__ == "__main__":
    main()
