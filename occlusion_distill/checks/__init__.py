"""The plugin contract, checked: behind ``occdistill check-plugin``, and for a plugin's own tests.

Occlusions are checked on built-in faces of varied pose: settings() records every option (it keys the
run cache), the input is left untouched, the same seed gives the same output whatever was drawn before,
keypoints are unchanged through ``A.Compose``, shape, dtype and channels are kept on RGB and grey faces
of two sizes, pixels change only inside the reported coverage mask; then two measurements, the share
of each face region hidden and the speed against albumentations' ``CoarseDropout``.

Distillers train one short epoch (a few steps) for a classification and a regression task, from an
untrained teacher on built-in faces, through their own ``train_student``: the student it returns was
trained, the loss terms stay finite, gradients reach the student and never the teacher
(which is left as it was given: weights, eval mode, no hooks), the trained student reloads into
``student_template`` (what the run cache does), and the settings are JSON.
"""

from __future__ import annotations

from typing import Any, Callable

from ..errors import UsageError
from ..registry import KINDS, registry
from .base import CHECKED_KINDS, DEFAULT_MIN_SPEED, DISTILLER_TASKS, CheckFailed, CheckResult, PluginReport
from .distiller import DISTILLER_CHECKS, check_distiller
from .occlusion import OCCLUSION_CHECKS, check_occlusion

__all__ = ["CHECKED_KINDS", "DEFAULT_MIN_SPEED", "DISTILLER_TASKS", "DISTILLER_CHECKS", "OCCLUSION_CHECKS", "CheckFailed",
           "CheckResult", "PluginReport", "check_distiller", "check_occlusion", "check_plugin", "planned_checks",
           "resolve_kind"]


def resolve_kind(name: str, kind: str | None = None) -> str:
    """The kind of a plugin name: ``kind`` when given, else the one checked kind that has the name."""
    if kind is not None:
        if kind not in CHECKED_KINDS:
            raise UsageError(f"check-plugin checks {' and '.join(CHECKED_KINDS)}, not {kind}")
        registry(kind).get(name)  # unknown: a one-line error with close names
        return kind
    found = [k for k in CHECKED_KINDS if name in registry(k).names()]
    if len(found) > 1:
        raise UsageError(f"'{name}' is both an occlusion and a distiller: say which with --kind")
    if not found:
        other = [k for k in KINDS if k not in CHECKED_KINDS and name in registry(k).names()]
        if other:
            option = f"--distiller triplet --distiller-arg miner={name}" if other[0] == "miners" else \
                f"--{other[0][:-1]} {name}"
            raise UsageError(f"'{name}' is a {other[0][:-1]}: check-plugin checks occlusions and distillers; "
                             f"try a smoke run instead: occdistill run --preset smoke {option}")
        close = [registry(k).unknown_message(name) for k in CHECKED_KINDS]
        raise UsageError(f"no occlusion or distiller is named '{name}' ({close[0]}; {close[1]}); if it is "
                         f"your plugin: is its package installed in this environment, and reinstalled since "
                         f"its entry points changed?")
    return found[0]


def check_plugin(name: str, kind: str | None = None, options: dict[str, Any] | None = None, *,
                 min_speed: float = DEFAULT_MIN_SPEED, tasks: tuple[str, ...] = DISTILLER_TASKS,
                 seed: int = 0, tick: Callable[[], None] | None = None) -> PluginReport:
    """Check one registered occlusion or distiller against the contract; never raises for a plugin's fault."""
    kind = resolve_kind(name, kind)
    entry = registry(kind).get(name)
    if kind == "occlusions":
        results = check_occlusion(entry, options or {}, min_speed=min_speed, seed=seed, tick=tick)
    else:
        results = check_distiller(entry, options or {}, tasks=tasks, seed=seed, tick=tick)
    return PluginReport(kind, name, entry.origin, results)


def planned_checks(kind: str, tasks: tuple[str, ...] = DISTILLER_TASKS) -> int:
    """How many contract points a check runs (for a progress bar)."""
    return len(OCCLUSION_CHECKS) if kind == "occlusions" else len(DISTILLER_CHECKS) * len(tasks)


# -- occlusions --------------------------------------------------------------------------------------
