"""``python -m reference_impl run``: run a federated job on the correct reference runtime."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from pytest_flrelia.contract import units
from pytest_flrelia.contract.events import server_lane
from pytest_flrelia.contract.job import JobConfig, TensorSpec, Timeouts
from pytest_flrelia.contract.memory_budget import memory_shortfall
from pytest_flrelia.contract.timeline import Event, EventKind, Timeline
from reference_impl.job import run_job

DTYPE = TensorSpec.dtype
ITEMSIZE = np.dtype(DTYPE).itemsize
"""Bytes of one element: a tensor size must be a whole number of them."""


def _argument(parse: Callable[[str, str], object], where: str) -> Callable[[str], object]:
    """An argparse ``type`` that reads a value the way a scenario file's key is read,
    with the same message (argparse adds the option's name in front)."""

    def convert(text: str) -> object:
        try:
            return parse(text, where)
        except units.UnitError as err:
            shown = f"; valid: {', '.join(err.valid)}" if err.valid else ""
            raise argparse.ArgumentTypeError(f"{err.reason}{shown}") from None

    return convert


def _count(minimum: int, where: str) -> Callable[[str], object]:
    return _argument(lambda text, at: units.parse_count(text, at, minimum), where)


def _tensor_size(text: str, where: str) -> int:
    return units.check_whole_elements(units.parse_size(text, where), DTYPE, ITEMSIZE, where)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m reference_impl", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run",
        help="run a job and print a summary",
        description="Run R rounds over S sites, each site training in a real subprocess, "
        "and print every round and a summary.",
    )
    run.add_argument(
        "--sites", type=_count(1, "--sites"), default=2, metavar="N",
        help="sites (clients) in the job, each with its own training process; "
        "a whole number >= 1 (default: %(default)s)",
    )
    run.add_argument(
        "--rounds", type=_count(1, "--rounds"), default=3, metavar="N",
        help="rounds the server runs; a whole number >= 1 (default: %(default)s)",
    )
    run.add_argument(
        "--launch-once",
        action="store_true",
        help="one training process for all rounds (default: one per round)",
    )
    run.add_argument(
        "--tensor-size", type=_argument(_tensor_size, "--tensor-size"), default="1MiB",
        metavar="SIZE",
        help=f"bytes of each tensor: {', '.join(units.SIZE_FORMS)}; a whole number of "
        f"{DTYPE} elements ({ITEMSIZE} bytes each) (default: %(default)s)",
    )
    run.add_argument(
        "--tensors", type=_count(0, "--tensors"), default=4, metavar="N",
        help="tensors in each site's result; 0: nothing to download (default: %(default)s)",
    )
    run.add_argument(
        "--production-timeouts",
        action="store_true",
        help="use production timeouts (a 30 min download gate) instead of scaled-down ones "
        "(60 s gate and stop wait, 120 s execution and SubmitUpdate waits)",
    )
    run.add_argument("-v", "--verbose", action="store_true", help="log every subprocess line")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    size = args.tensor_size
    tensors = TensorSpec(count=args.tensors, size_bytes=size, dtype=DTYPE)
    shortfall = memory_shortfall(args.sites, tensors)
    if shortfall is not None:
        parser.error(f"--sites, --tensors, --tensor-size: {shortfall}")
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    timeouts = (
        Timeouts()
        if args.production_timeouts
        else replace(
            Timeouts.fast(),
            download_complete=60.0,
            stop_wait=60.0,
            execution=120.0,
            submit_update=120.0,
        )
    )
    config = JobConfig(
        sites=args.sites,
        rounds=args.rounds,
        launch_once=args.launch_once,
        tensors=tensors,
        timeouts=timeouts,
    )
    mode = "one process for all rounds" if config.launch_once else "one process per round"
    print(
        f"job: {config.sites} site(s) x {config.rounds} round(s), {mode}, "
        f"{config.tensors.count} x {size} bytes per result"
    )
    timeline = Timeline(server_lane())
    timeline.subscribe(_print_round)
    result = run_job(config, timeline=timeline)
    mb = result.bytes_downloaded / 1e6
    print(
        f"summary: {len(result.rounds)} round(s), {result.bytes_downloaded} bytes downloaded, "
        f"{result.seconds:.2f}s, {mb / max(result.seconds, 1e-9):.1f} MB/s overall"
    )
    if not result.ok:
        print(f"error: {result.error}", file=sys.stderr)
        return 1
    return 0


def _print_round(event: Event) -> None:
    if event.kind is EventKind.ROUND_END:
        status = "ok" if event.detail.get("ok") else f"FAILED: {event.detail.get('error')}"
        print(f"round {event.round}: {status}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
