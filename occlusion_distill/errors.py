"""The one error vocabulary of occlusion-distill.

Every failure a user can cause is an ``OccdistillError`` with a one-line message and a documented
exit code; the CLI prints the message and exits with the code, never a traceback.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

EXIT_USAGE = 2
EXIT_DATA = 3
EXIT_RUNTIME = 4
EXIT_INTERRUPTED = 130  # as a shell reports a Ctrl-C


class OccdistillError(Exception):
    """A failure that the user can act on; ``str(err)`` is the whole message."""

    exit_code = EXIT_RUNTIME


class UsageError(OccdistillError):
    """Bad options, names or paths given by the user."""

    exit_code = EXIT_USAGE


class DataError(OccdistillError):
    """Input data that is missing, malformed or lacks what a task needs."""

    exit_code = EXIT_DATA


class PluginError(OccdistillError):
    """A plugin that cannot be used: unknown name, name clash, or a failure inside it."""

    exit_code = EXIT_USAGE


class RunFailed(OccdistillError):
    """A failure while a run trains or evaluates (a plugin that raised, a diverging loss)."""

    exit_code = EXIT_RUNTIME


class Interrupted(OccdistillError):
    """Ctrl-C: the work stopped after saving what it could (a run keeps its last checkpoint)."""

    exit_code = EXIT_INTERRUPTED

    @classmethod
    def saying(cls, exc: BaseException, kept: str) -> "Interrupted":
        """The one line for ``exc`` (a Ctrl-C, or the trainer's ``Interrupted`` that says where its stage
        stopped) followed by ``kept``: what the caller keeps and how to continue."""
        return cls(f"{exc if isinstance(exc, Interrupted) else 'interrupted'}; {kept}")


def check_number(value: Any, option: str, lo: float | None = None, hi: float | None = None, *, plugin: str,
                 integer: bool = False, unit: str = "") -> float | int:
    """``value`` as a float (an int with ``integer``) in [lo, hi] (None: unbounded), or a one-line ``UsageError``.

    Rejects bools (``True`` is not 1 eye distance), strings, NaN and values out of range; with
    ``integer``, also non-integral numbers (2.0 is accepted as 2). The message names the plugin and the
    option, and ``unit`` (say "eye distances") is shown after the range.
    """
    ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and not math.isnan(value) \
        and (lo is None or value >= lo) and (hi is None or value <= hi) \
        and (not integer or float(value).is_integer())
    if not ok:
        bounds = f"in [{'-inf' if lo is None else f'{lo:g}'}, {'inf' if hi is None else f'{hi:g}'}]"
        kind = "an integer " if integer else ""
        raise UsageError(f"{plugin}: {option} must be {kind}{bounds}{f' ({unit})' if unit else ''}, not {value!r}")
    return int(value) if integer else float(value)
