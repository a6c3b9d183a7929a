"""The scenario language: the fault catalog, the schema, and the loader."""
