"""Planted bugs of the reference runtime that no shipped scenario catches (issue #15).

``planted.target.PlantedTarget`` (target name ``planted``) is the reference target with
these bugs as extra variants; ``planted.plugin`` supplies it to pytest, and
``planted.install`` installs it as a ``flrelia.targets`` entry point (for worker
processes and the command line).
"""
