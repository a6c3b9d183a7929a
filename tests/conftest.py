"""Shared test configuration."""

pytest_plugins = ["pytester"]

# Scenario files under data/ are fixtures of the plugin tests (many are broken on
# purpose); the suite itself must not collect them when the plugin is installed.
collect_ignore = ["data"]
