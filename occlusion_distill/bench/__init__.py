"""Benchmarks: measurements that are too slow or too noisy for the tests (``occdistill bench ...``)."""
