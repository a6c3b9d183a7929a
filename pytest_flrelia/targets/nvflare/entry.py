"""The ``flrelia.targets`` entry point: importing it checks the installed NVFlare.

The plugin loads an entry point once at start-up, so a missing or unsupported NVFlare is
one clear usage error then (naming ``pip install 'pytest-flrelia[nvflare]'`` or the
supported range), not a harness error per scenario.  Nothing of nvflare is imported.
"""

from __future__ import annotations

import os

from pytest_flrelia.targets.nvflare import version, wiring
from pytest_flrelia.targets.nvflare.target import NVFlareTarget

INSTALLED = version.installed()


def make_target() -> NVFlareTarget:
    """The target for the installed NVFlare; ``FLRELIA_NVFLARE_PIPE=file`` selects FilePipe."""
    return NVFlareTarget(pipe=os.environ.get(wiring.PIPE_ENV) or "cell", installed=INSTALLED)


__all__ = ["INSTALLED", "make_target"]
