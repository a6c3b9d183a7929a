"""pytest-flrelia: fault-injection scenarios for federated-learning subprocess launchers."""

__version__ = "0.1.0"
