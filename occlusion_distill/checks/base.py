"""What every contract check shares: results, the report of one plugin, and the check runner."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable




CHECKED_KINDS = ("occlusions", "distillers")
DISTILLER_TASKS = ("expression", "age")  # one classification and one regression task
# x CoarseDropout at 112 px on one thread: about 400 faces/s where CoarseDropout runs 8,000 (the built-ins
# run at 0.36-0.87x in docs/occlusions-bench.json). A run reads 40-112 px faces at a few hundred per second,
# so a plugin slower than this would be what the training waits for.
DEFAULT_MIN_SPEED = 0.05


class CheckFailed(Exception):
    """One contract point does not hold; the message says where."""


@dataclass
class CheckResult:
    check: str
    passed: bool
    detail: str
    task: str | None = None  # distillers are checked once per task


@dataclass
class PluginReport:
    kind: str
    name: str
    origin: str
    results: list[CheckResult]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "origin": self.origin, "passed": self.passed,
                "results": [asdict(r) for r in self.results]}


class _Checks:
    """Runs contract points one by one: a point that raises fails with the reason, the next still runs."""

    def __init__(self, tick: Callable[[], None] | None = None, task: str | None = None):
        self.results: list[CheckResult] = []
        self.tick = tick
        self.task = task

    def run(self, name: str, fn: Callable[[], str]) -> bool:
        try:
            detail, passed = fn(), True
        except CheckFailed as exc:
            detail, passed = str(exc), False
        except Exception as exc:  # the plugin's own error is the reason
            detail, passed = f"raised {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", False
        self.results.append(CheckResult(name, passed, detail, self.task))
        if self.tick is not None:
            self.tick()
        return passed
