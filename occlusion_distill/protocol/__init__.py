"""The teacher -> student protocol: the pipeline object, cache keys, the run directory and its artifacts."""
