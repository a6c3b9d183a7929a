"""Which NVFlare is installed, read from its metadata only (nothing of it is imported).

The launcher stack this target drives (``ClientAPILauncherExecutor``,
``SubprocessLauncher``, the pipe handler) is there in 2.7 and 2.8; 2.9.0 removed it.
The target is built and checked against 2.7.1 to 2.8.x, so the supported range is
``>=2.7.1, <2.9``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import metadata

from pytest_flrelia.errors import TargetUnavailableError

DISTRIBUTION = "nvflare"
MINIMUM = (2, 7, 1)
BELOW = (2, 9)
SUPPORTED = ">=2.7.1, <2.9"
INSTALL = "pip install 'pytest-flrelia[nvflare]'"


NVFlareUnavailable = TargetUnavailableError
"""No NVFlare, or one this target cannot drive: the message says what to install."""


@dataclass(frozen=True)
class Installed:
    """The installed NVFlare: its version string as published (``2.7.2rc13``) and parsed."""

    text: str
    release: tuple[int, ...]
    pre: str | None
    """The pre-release tag (``rc13``), or ``None`` for a final release."""

    @property
    def label(self) -> str:
        """``nvflare 2.7.2rc13``: what the report header says."""
        return f"{DISTRIBUTION} {self.text}"


_VERSION = re.compile(r"^(\d+(?:\.\d+)*)((?:a|b|rc)\d+)?(?:\.post\d+)?(?:\.dev\d+)?(?:\+.*)?$")


def parse(text: str) -> Installed:
    """``2.7.2rc13`` -> release (2, 7, 2), pre ``rc13``; raises ValueError if it is no version."""
    match = _VERSION.match(text.strip())
    if match is None:
        raise ValueError(f"not a version: {text!r}")
    release = tuple(int(p) for p in match.group(1).split("."))
    return Installed(text=text.strip(), release=release, pre=match.group(2))


def check(installed: Installed) -> Installed:
    """``installed`` if this target can drive it, else :class:`NVFlareUnavailable` naming
    the supported range.  A pre-release counts as its release (2.7.2rc13 is a 2.7.2)."""
    release = (*installed.release, 0, 0, 0)[:3]
    if release < MINIMUM or release[:2] >= BELOW:
        why = (
            "2.9.0 removed the launcher stack this target drives"
            if release[:2] >= BELOW
            else "it was built and checked against 2.7.1 to 2.8.x only"
        )
        raise NVFlareUnavailable(
            f"the nvflare target supports nvflare {SUPPORTED}, but {installed.label} is "
            f"installed ({why}); install a supported one: pip install 'nvflare{SUPPORTED}'"
        )
    return installed


def installed() -> Installed:
    """The installed NVFlare, checked; :class:`NVFlareUnavailable` if it is missing or
    outside the supported range."""
    try:
        text = metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise NVFlareUnavailable(
            f"the nvflare target needs NVFlare ({SUPPORTED}), which is not installed: "
            f"{INSTALL}"
        ) from None
    return check(parse(text))


__all__ = [
    "BELOW",
    "DISTRIBUTION",
    "INSTALL",
    "MINIMUM",
    "SUPPORTED",
    "Installed",
    "NVFlareUnavailable",
    "check",
    "installed",
    "parse",
]
