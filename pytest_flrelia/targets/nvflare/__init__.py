"""The ``nvflare`` target: the shipped scenarios against the real NVFlare 2.7/2.8 launcher stack.

Importing this package imports no nvflare: the harness process only reads the installed
version (:mod:`.version`); the job itself runs in a runner process (:mod:`.runner`).
``docs/nvflare-wiring.md`` describes the wiring.
"""
