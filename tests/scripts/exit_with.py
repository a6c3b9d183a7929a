"""Print some lines (and environment variables), then exit with a given code.

usage: exit_with.py CODE [--env NAME]... [LINE]...
"""

from __future__ import annotations

import argparse
import os
import sys


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("code", type=int)
    parser.add_argument("--env", action="append", default=[])
    parser.add_argument("lines", nargs="*")
    args = parser.parse_args()
    for name in args.env:
        print(f"ENV {name}={os.environ.get(name, '<unset>')}")
    for line in args.lines:
        print(line)
    sys.stdout.flush()
    return int(args.code)


if __name__ == "__main__":
    sys.exit(main())
