"""What a target and the harness share: the job, the events, units, failpoints.

Nothing here imports a runtime, pytest or the judge, so a target written
against it depends on nothing else of the plugin.
"""
