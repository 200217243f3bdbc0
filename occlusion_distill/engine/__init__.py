"""The engine: one training loop, the teacher -> student protocol, the run cache and run directories."""
