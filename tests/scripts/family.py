"""A child that may ignore SIGTERM and may start a grandchild holding stdout.

Every process announces itself on stdout once its signal handling is set up:
``CHILD-READY pid=N`` / ``GRANDCHILD-READY pid=N``; the test waits for these
lines (forwarded to logging by the launcher) instead of sleeping.  The child
announces itself only after its grandchild did.  Nothing here lives longer than
``LIFETIME`` seconds, so a process a broken stop leaks still goes away.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import subprocess
import sys
import time

LIFETIME = 30.0


def announce(role: str) -> None:
    print(f"{role}-READY pid={os.getpid()}", flush=True)


def clean_up_and_exit(seconds: float) -> None:
    """A SIGTERM handler that takes a while (a data loader flushing), then exits."""
    time.sleep(seconds)
    print(f"GRANDCHILD-CLEANED pid={os.getpid()}", flush=True)
    sys.exit(0)


def run_grandchild(args: argparse.Namespace) -> int:
    if args.setsid:
        os.setsid()
    if args.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    elif args.cleanup_seconds > 0:
        signal.signal(signal.SIGTERM, lambda *_: clean_up_and_exit(args.cleanup_seconds))
    announce("GRANDCHILD")
    os.write(args.ready_fd, b"x")
    os.close(args.ready_fd)
    time.sleep(LIFETIME)
    return 0


def start_grandchild(args: argparse.Namespace) -> None:
    """Start a grandchild that inherits stdout; return once it announced itself."""
    ready_read, ready_write = os.pipe()
    command = [sys.executable, __file__, "--role", "grandchild", "--ready-fd", str(ready_write)]
    if args.grandchild == "setsid":
        command.append("--setsid")
    if args.grandchild_ignores_sigterm:
        command.append("--ignore-sigterm")
    command += ["--cleanup-seconds", str(args.grandchild_cleanup_seconds)]
    subprocess.Popen(command, pass_fds=(ready_write,))
    os.close(ready_write)
    readable, _, _ = select.select([ready_read], [], [], 10.0)
    if not readable or not os.read(ready_read, 1):
        sys.exit("grandchild did not announce itself within 10 s")
    os.close(ready_read)


def run_child(args: argparse.Namespace) -> int:
    if args.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if args.grandchild != "none":
        start_grandchild(args)
    announce("CHILD")
    if args.exit_after_ready is not None:
        return int(args.exit_after_ready)
    time.sleep(LIFETIME)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--role", choices=("child", "grandchild"), default="child")
    parser.add_argument("--ignore-sigterm", action="store_true")
    parser.add_argument("--grandchild", choices=("none", "inherit", "setsid"), default="none")
    parser.add_argument("--grandchild-ignores-sigterm", action="store_true")
    parser.add_argument("--grandchild-cleanup-seconds", type=float, default=0.0)
    parser.add_argument("--cleanup-seconds", type=float, default=0.0)
    parser.add_argument("--exit-after-ready", type=int, default=None)
    parser.add_argument("--setsid", action="store_true")
    parser.add_argument("--ready-fd", type=int, default=-1)
    args = parser.parse_args()
    return run_grandchild(args) if args.role == "grandchild" else run_child(args)


if __name__ == "__main__":
    sys.exit(main())
