"""The embedded reference runtime as a target: its fault plan and known-bug variants."""
