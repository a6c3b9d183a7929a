"""The training script NVFlare's ``SubprocessLauncher`` runs: the plain client API.

``python -m pytest_flrelia.targets.nvflare.child.train SITE``.  It installs the
observation first (:mod:`.boot`), then ``flare.init`` / ``flare.receive`` /
``flare.send`` for as many tasks as it gets (one when launched per round).  Training is
the reference runtime's update rule (:func:`~pytest_flrelia.targets.reference.oracle.local_update`),
so the reference model oracle recomputes the global model a correct run ends with; the
result carries the site's weight, which the server averages by.  A validate task
returns metrics only.
"""

from __future__ import annotations

import sys
import traceback

from pytest_flrelia.contract import seams
from pytest_flrelia.targets.nvflare.child import boot


def main(argv: list[str]) -> int:
    site = argv[0]
    boot.install(site)
    # imported after the observation is in place, so it sees every call
    from pytest_flrelia.targets.nvflare import nv  # noqa: PLC0415
    from pytest_flrelia.targets.reference.oracle import local_update, site_weight  # noqa: PLC0415

    flare = nv.module("client")
    fl_model = nv.module("app_common.abstract.fl_model")
    flare.init()
    while flare.is_running():
        model = flare.receive()
        if model is None:
            break
        round = int(model.current_round)
        if flare.is_evaluate():
            flare.send(fl_model.FLModel(metrics={"round": round, "site": site}))
            continue
        params = local_update(model.params, site, round)
        flare.send(
            fl_model.FLModel(
                params_type=fl_model.ParamsType.FULL,
                params=params,
                meta={"weight": site_weight(site)},
                current_round=round,
            )
        )
    return 0


def run(argv: list[str]) -> None:
    """:func:`main`, then end the process at once: NVFlare's cells leave non-daemon
    threads that would hold a finished (or failed) script open."""
    code = 1
    try:
        code = main(argv)
    except BaseException:
        traceback.print_exc()
    finally:
        seams.exit_process(code)


if __name__ == "__main__":
    run(sys.argv[1:])
