"""What the protocol says while it runs, and to whom: the ``Reporter`` interface.

The protocol never prints. It calls a reporter: ``stage(name, total)`` for a progress bar, ``info`` for
a line of progress, ``warn`` for a warning. ``report.RichReporter`` (the command line's) draws them with
rich; ``NullReporter`` (the default for library use) says nothing. Any object with these three methods
will do: the interfaces are ``typing.Protocol`` classes, checked by shape, not by base class.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class ProgressBar(Protocol):
    """One bar: ``advance(n)`` by n items, ``note(text)`` beside it, ``close()`` when done."""

    def advance(self, n: int = 1) -> None: ...

    def note(self, text: str) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class Reporter(Protocol):
    """What the protocol reports to. ``stage(name, total)`` opens a bar of ``total`` items (None: of
    unknown length), which its caller closes; ``info`` and ``warn`` take one line of plain text."""

    def stage(self, name: str, total: int | None) -> ProgressBar: ...

    def info(self, message: str) -> None: ...

    def warn(self, message: str) -> None: ...


class NullBar:
    """A progress bar that shows nothing."""

    def advance(self, n: int = 1) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


class NullReporter:
    """Reports nothing (library use, tests, and the torchrun ranks other than 0)."""

    def stage(self, name: str, total: int | None) -> NullBar:
        return NullBar()

    def info(self, message: str) -> None:
        pass

    def warn(self, message: str) -> None:
        pass
