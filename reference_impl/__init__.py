"""A small, correct reference implementation of a federated-learning subprocess launcher.

Real processes, real sockets, real signals.  See ``docs/architecture.md``.
"""

__version__ = "0.1.0"
