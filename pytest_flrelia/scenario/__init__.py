"""The scenario language: the fault catalog, the schema, and the loader.

Loading runs three passes, one module each: :mod:`.source` (YAML with the line of
every key), :mod:`.validate` (the shipped JSON Schema), :mod:`.build` (meaning,
into the :mod:`.model`); :mod:`.loader` runs them over a file.  Nothing here
imports a runtime, the judge, the harness or the pytest layer
(``tests/test_dependency_rules.py``).
"""
