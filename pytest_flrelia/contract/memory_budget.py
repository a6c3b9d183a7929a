"""Whether a job's tensors can fit in this machine's memory at all, said with the arithmetic.

A scenario asking for 100 tensors of 1GiB over 4 sites is a typo, not a test: refused
before anything starts, it costs a line; started, it costs a swapping host and a
killed run.  The figure is a lower bound (every training process holds its result, the
server holds the global model), so a job refused here could never have run.
"""

from __future__ import annotations

import psutil

from pytest_flrelia.contract.job import TensorSpec
from pytest_flrelia.contract.units import SIZE_UNITS


def _readable(size: int) -> str:
    """``4GiB`` when it is round, else to a tenth of its largest unit (``22.9GiB``)."""
    for unit in ("GiB", "MiB", "KiB"):
        if size >= SIZE_UNITS[unit]:
            value = size / SIZE_UNITS[unit]
            return f"{value:.0f}{unit}" if value.is_integer() else f"{value:.1f}{unit}"
    return f"{size} bytes"


def job_memory(sites: int, tensors: TensorSpec) -> int:
    """Bytes the job needs at least: one result per site plus the server's model."""
    return tensors.count * tensors.size_bytes * (sites + 1)


def available_memory() -> int:
    """What the host can give now without swapping (``psutil.virtual_memory().available``)."""
    return int(psutil.virtual_memory().available)


def memory_shortfall(sites: int, tensors: TensorSpec, available: int | None = None) -> str | None:
    """Why the job cannot fit in ``available`` bytes (default: the host's), or ``None``."""
    needed = job_memory(sites, tensors)
    budget = available_memory() if available is None else available
    if needed <= budget:
        return None
    site_word = "site" if sites == 1 else "sites"
    return (
        f"{tensors.count} tensors x {_readable(tensors.size_bytes)} x ({sites} {site_word} "
        f"+ the server's model) = {_readable(needed)} at least, more than the "
        f"{_readable(budget)} of memory available on this host (the budget: "
        "psutil.virtual_memory().available); use fewer or smaller tensors"
    )


__all__ = ["available_memory", "job_memory", "memory_shortfall"]
