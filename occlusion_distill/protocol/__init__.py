"""The teacher -> student protocol, above the training layer (``engine``).

- ``pipeline``: ``ProtocolRun``, one run with one method per step, and ``run(cfg, ...)``;
- ``rundir``: ``run_to_dir(cfg, out, ...)``, a run written as a complete run directory;
- ``keys``: the cache keys; ``stages``: the stage cache; ``parts``: the run's plugins;
- ``artifacts``: report.md and the plots; ``reporting``: the ``Reporter`` interface.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .pipeline import ProtocolRun, RunData, RunResult, gap_closed, preflight, run
    from .reporting import NullReporter, Reporter
    from .rundir import run_to_dir

# Names load on first use (PEP 562), so the console module can import ``protocol.reporting`` without
# importing torch through ``pipeline``: ``occdistill --help`` answers at once (naming a plugin still loads them).
_WHERE = {"ProtocolRun": "pipeline", "RunData": "pipeline", "RunResult": "pipeline", "gap_closed": "pipeline",
          "preflight": "pipeline", "run": "pipeline", "NullReporter": "reporting", "Reporter": "reporting",
          "run_to_dir": "rundir"}

__all__ = ["NullReporter", "ProtocolRun", "Reporter", "RunData", "RunResult", "gap_closed", "preflight", "run",
           "run_to_dir"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
