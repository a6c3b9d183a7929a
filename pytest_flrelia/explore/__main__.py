"""``python -m pytest_flrelia.explore``: explore from the command line, print the summary.

Exit status: 0 when nothing failed, 1 when a schedule failed (its minimal scenario is in
``--out``), 2 for a bad argument.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pytest_flrelia.explore.api import explore
from pytest_flrelia.harness.termination import sigterm_exits


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pytest_flrelia.explore", description=__doc__)
    p.add_argument("--target", default="reference", help="the target (default: reference)")
    p.add_argument(
        "--known-bug",
        "--variant",
        dest="variant",
        default=None,
        metavar="SLUG",
        help="the target's variant (a known-bug slug for the reference)",
    )
    p.add_argument("-n", "--count", type=int, default=100, help="schedules to draw (100)")
    p.add_argument("--budget", default="5m", help="stop drawing after this long (5m)")
    p.add_argument("--seed", type=int, default=0, help="the session seed (0)")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="where the minimal failing scenarios are written",
    )
    p.add_argument("-j", "--jobs", type=int, default=1, help="worker processes (1)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    with sigterm_exits():  # a SIGTERM unwinds: the runs' temp dirs and children go
        report = explore(
            args.target,
            variant=args.variant,
            count=args.count,
            budget=args.budget,
            seed=args.seed,
            out_dir=args.out,
            jobs=args.jobs,
            progress=lambda line: print(line, flush=True),
        )
    print("\n".join(report.summary_lines()))
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
