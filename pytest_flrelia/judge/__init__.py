"""Judging a run: the invariants, the live checks, and the failure report."""
