"""Pass failpoint ``x`` a few times in a fresh interpreter, the way the agent would.

Usage: ``python pass_failpoint.py [--skip-configure] [--calls N]``.  Unless told to
skip it, configures from the environment first (the agent does that at start).
Prints one JSON line: whether a configuration was found and the 0-based calls
at which ``x`` fired.  A failpoint that exits or raises ends the script there.
"""

from __future__ import annotations

import argparse
import json

from pytest_flrelia.contract import failpoints


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-configure", action="store_true")
    parser.add_argument("--calls", type=int, default=1)
    args = parser.parse_args()
    found = False if args.skip_configure else failpoints.configure_from_environment()
    fired: list[int] = []
    for call in range(args.calls):
        before = failpoints.hits("x")
        failpoints.failpoint("x")
        if failpoints.hits("x") > before:
            fired.append(call)
    print(json.dumps({"configured": found, "fired": fired}), flush=True)


if __name__ == "__main__":
    main()
