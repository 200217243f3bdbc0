"""The one error vocabulary of occlusion-distill.

Every failure a user can cause is an ``OccdistillError`` with a one-line message and a documented
exit code; the CLI prints the message and exits with the code, never a traceback.
"""

from __future__ import annotations

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
