"""The nvflare suite's wall time, per version, ``-n 2`` against serial, and against the
reference target on the same scenario items, in one run.

``python benchmarks/nvflare_suite.py --venv 2.7.2=VENV [--venv V=VENV ...] [--keep DIR]``

Each version's suite runs as a user runs it (``VENV/bin/python -m pytest scenarios/
--flrelia-target=nvflare``, pytest start-up included), once with ``-n 2`` and once
serially; the reference target then runs exactly the items that version ran (not the
skipped ones), both ways, in the same environment.  ``docs/performance.md`` explains the
figures.  ``--target`` and ``--extra`` exist for the benchmark's own test, which stands
the reference's known-bug variants in for versions.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import REPO_ROOT
from benchmarks.figure import Figure, render_table
from pytest_flrelia.tools.nvflare_matrix import Version, python_of, run_version

SCENARIOS = Path("scenarios")
PARALLEL = 2


def _slug(version: str) -> str:
    return version.replace(".", "_").replace("-", "_")


def measure_version(
    version: Version,
    scenarios: Path | Sequence[str],
    *,
    target: str = "nvflare",
    reference: str = "reference",
    cwd: Path = REPO_ROOT,
    keep: Path | None = None,
) -> list[Figure]:
    """The figures of one version: its suite both ways, the reference's on its items.
    With ``keep``, the suite's records stay there as the matrix tool keeps its own
    (``V-nvflare-n2.json``, ``V-nvflare-n1.json``): ``--reuse`` or ``--observe`` them."""
    slug = _slug(version.name)
    entries, parallel = run_version(version, scenarios, target, PARALLEL, cwd=cwd, keep=keep)
    _, serial = run_version(version, scenarios, target, 1, cwd=cwd, keep=keep)
    ran = [  # by file and name: a node id is relative to a rootdir the next run may not share
        f"{e['file']}::{e['name']}" for e in entries if e.get("outcome") not in ("skipped", None)
    ]
    failures = sum(e.get("outcome") not in ("passed", "xfailed", "skipped") for e in entries)
    note = f"{len(ran)} of {len(entries)} items ran" + (
        f", {failures} failed (their time is in the wall)" if failures else ""
    )
    figures = [
        Figure(f"nvflare_suite_{slug}_n2_s", parallel, note=note),
        Figure(f"nvflare_suite_{slug}_serial_s", serial),
        Figure(f"nvflare_suite_{slug}_speedup", serial / parallel),
    ]
    if not ran:
        return figures
    plain = Version(version.name, version.python)  # the reference has no version to select
    _, ref_parallel = run_version(plain, ran, reference, PARALLEL, cwd=cwd)
    _, ref_serial = run_version(plain, ran, reference, 1, cwd=cwd)
    figures += [
        Figure(f"reference_same_items_{slug}_n2_s", ref_parallel),
        Figure(f"reference_same_items_{slug}_serial_s", ref_serial),
        Figure(f"nvflare_over_reference_{slug}_n2", parallel / ref_parallel),
        Figure(f"nvflare_over_reference_{slug}_serial", serial / ref_serial),
    ]
    return figures


def _parse(argv: Iterable[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python benchmarks/nvflare_suite.py")
    parser.add_argument("--venv", action="append", default=[], required=True,
                        metavar="VERSION=PATH", help="a version and its venv; repeatable")
    parser.add_argument("--extra", action="append", default=[], metavar="VERSION=ARG")
    parser.add_argument("--scenarios", type=Path, default=SCENARIOS)
    parser.add_argument("--target", default="nvflare")
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR",
                        help="keep the nvflare suite's records and logs here")
    return parser.parse_args(None if argv is None else list(argv))


def main(argv: Iterable[str] | None = None) -> int:
    args = _parse(argv)
    extra: dict[str, list[str]] = {}
    for value in args.extra:
        name, _, arg = value.partition("=")
        extra.setdefault(name, []).append(arg)
    figures: list[Figure] = []
    for value in args.venv:
        name, _, path = value.partition("=")
        version = Version(name, python_of(Path(path)), tuple(extra.get(name, ())))
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
        for figure in measure_version(version, args.scenarios, target=args.target,
                                      keep=args.keep):
            print(figure.line(), flush=True)
            figures.append(figure)
    print(render_table(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
