"""NVFlare's modules, imported by name (only in the runner and in training processes).

NVFlare ships no type information, so its modules are loaded through
:func:`importlib.import_module` and typed ``Any``: the type checker judges our code,
never guesses at theirs, and runs the same with or without nvflare installed.
"""

from __future__ import annotations

import importlib
from typing import Any


def module(name: str) -> Any:
    """``nvflare.<name>``, imported."""
    return importlib.import_module(f"nvflare.{name}")


def optional(name: str) -> Any | None:
    """``nvflare.<name>``, or ``None`` when this version has no such module (2.7.1 has no
    download service, for one)."""
    try:
        return module(name)
    except ModuleNotFoundError as err:
        if err.name is not None and f"nvflare.{name}".startswith(err.name):
            return None
        raise
