"""``python -m reference_impl run``: run a federated job on the correct reference runtime."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import replace

from reference_impl import units
from reference_impl.config import JobConfig, TensorSpec, Timeouts
from reference_impl.job import run_job
from reference_impl.timeline import Event, EventKind, Timeline


def parse_size(text: str) -> int:
    """``--tensor-size``: the same size syntax scenario files use."""
    try:
        return units.parse_size(text, "--tensor-size")
    except units.UnitError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a size (like 1024, 64KiB, 1MiB, 1GiB)"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m reference_impl", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a job and print a summary")
    run.add_argument("--sites", type=int, default=2)
    run.add_argument("--rounds", type=int, default=3)
    run.add_argument(
        "--launch-once",
        action="store_true",
        help="one training process for all rounds (default: one per round)",
    )
    run.add_argument("--tensor-size", type=parse_size, default=parse_size("1MiB"))
    run.add_argument(
        "--tensors", type=int, default=4, help="tensors per result (0: nothing to download)"
    )
    run.add_argument(
        "--production-timeouts",
        action="store_true",
        help="use production timeouts (minutes) instead of scaled-down ones",
    )
    run.add_argument("-v", "--verbose", action="store_true", help="log every subprocess line")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
        tensors=TensorSpec(count=args.tensors, size_bytes=args.tensor_size),
        timeouts=timeouts,
    )
    mode = "one process for all rounds" if config.launch_once else "one process per round"
    print(
        f"job: {config.sites} site(s) x {config.rounds} round(s), {mode}, "
        f"{config.tensors.count} x {args.tensor_size} bytes per result"
    )
    timeline = Timeline("server")
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
