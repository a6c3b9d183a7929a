"""Every shipped scenario on every planted variant: each must pass (no shipped scenario
catches a planted bug).  ``PYTHONPATH=tests python -m planted.check_shipped [SLUG...]``;
exit status 1 when one fails (it prints the failure's checks).  The suite runs the
scenarios nearest each bug (``test_planted.py``); this runs them all (~1 min a variant).

The same check through pytest, per variant::

    PYTHONPATH=tests pytest scenarios/ -p planted.plugin --flrelia-target=planted \\
        --flrelia-known-bug=SLUG
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

from planted.registry import PLANTED
from planted.target import PLANTED_TARGET, PlantedTarget
from pytest_flrelia.errors import ScenarioFailure, ScenarioUnsupported
from pytest_flrelia.harness.runner import run_scenario
from pytest_flrelia.harness.settings import Settings
from pytest_flrelia.tools.zoo import shipped_scenarios

ROOT = Path(__file__).resolve().parents[2]


def main(argv: Sequence[str] | None = None) -> int:
    slugs = list(argv if argv is not None else sys.argv[1:]) or sorted(PLANTED)
    target = PlantedTarget()
    scenarios = shipped_scenarios(ROOT / "scenarios")
    failures = 0
    for slug in slugs:
        started = time.monotonic()
        bad: list[str] = []
        for scenario in scenarios:
            try:
                run_scenario(
                    scenario,
                    Settings(target=PLANTED_TARGET, known_bug=slug),
                    targets=lambda name: target,
                )
            except ScenarioUnsupported as skip:
                bad.append(f"{scenario.name} skipped: {skip}")
            except ScenarioFailure as failure:
                checks = [] if failure.verdict is None else failure.verdict.failures
                bad.append(f"{scenario.name} FAILED {', '.join(c.name for c in checks)}")
        failures += len(bad)
        verdict = "all pass" if not bad else f"{len(bad)} not passed"
        print(f"{slug}: {len(scenarios)} shipped scenarios, {verdict} "
              f"({time.monotonic() - started:.0f}s)", flush=True)
        for line in bad:
            print(f"  {line}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
