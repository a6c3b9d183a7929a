"""minilaunch: a deliberately small launcher, written only against the target SPI
(``pytest_flrelia.contract``), that proves a second system can be judged."""

from minilaunch.target import MiniTarget

__all__ = ["MiniTarget"]
