"""``module:qualname`` import paths: how a part is named where it cannot be passed as an
object (in a training process's environment, in a registry read before the runtime loads)."""

from __future__ import annotations

import importlib


def load(path: str) -> object:
    """The object ``module:qualname`` names (a dotted qualname reaches nested attributes)."""
    module_name, _, qualname = path.partition(":")
    found: object = importlib.import_module(module_name)
    for attribute in qualname.split("."):
        found = getattr(found, attribute)
    return found


__all__ = ["load"]
