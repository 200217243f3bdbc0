"""The teacher -> student protocol, above the training layer (``engine``).

- ``pipeline``: ``ProtocolRun``, one run with one method per step, and ``run(cfg, ...)``;
- ``rundir``: ``run_to_dir(cfg, out, ...)``, a run written as a complete run directory;
- ``keys``: the cache keys; ``stages``: the stage cache; ``parts``: the run's plugins;
- ``artifacts``: report.md and the plots; ``reporting``: the ``Reporter`` interface.
"""

from .pipeline import ProtocolRun, RunData, RunResult, gap_closed, preflight, run
from .reporting import NullReporter, Reporter
from .rundir import run_to_dir

__all__ = ["NullReporter", "ProtocolRun", "Reporter", "RunData", "RunResult", "gap_closed", "preflight", "run",
           "run_to_dir"]
