"""The tests beside this file may run scenarios with ``--flrelia-target=planted``."""

from planted.plugin import pytest_flrelia_make_target

__all__ = ["pytest_flrelia_make_target"]
