"""Generators of shipped artifacts: the bug zoo and the fault catalog page."""
