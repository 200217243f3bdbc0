"""A run directory is built under a temporary name and renamed into place only when complete."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

from ..errors import UsageError


def check_out_dir(out: Path, overwrite: bool = False) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UsageError(f"--out {out} already exists and is not empty; choose another or pass --overwrite")
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise UsageError(f"--out {out}: {parent} is a file, not a directory")
    if parent.exists() and not os.access(parent, os.W_OK):
        raise UsageError(f"--out {out}: {parent} is not writable")


def partial_dir(out: Path) -> Path:
    """Where a run is built until it completes; it stays there, resumable, when a run is interrupted."""
    out = Path(out)
    return out.parent / f".{out.name}.partial"


class RunDir:
    """``with RunDir(out) as tmp:`` write into ``tmp``; on success it becomes ``out``.

    ``tmp`` is ``.OUT.partial`` beside ``out``. On failure it is removed, unless a stage checkpoint was
    saved in it (``keep`` says so): then it stays for ``occdistill run --resume OUT``. Under torchrun only
    the writer (rank 0) creates, renames or removes anything.
    """

    def __init__(self, out: str | Path, overwrite: bool = False, resume: bool = False,
                 keep: Callable[[Path], bool] | None = None, writer: bool = True):
        self.out = Path(out)
        self.overwrite, self.resume, self.writer = overwrite, resume, writer
        self.keep = keep or (lambda tmp: False)
        self.tmp = partial_dir(self.out)
        self.kept = False
        self._made: list[Path] = []
        if not writer:
            return
        if resume:
            if (self.out / "metrics.json").is_file() and not self.tmp.exists():
                raise UsageError(f"{self.out} is a finished run: there is nothing to resume")
            if not self.tmp.is_dir():
                raise UsageError(f"no interrupted run to resume at {self.out} (looked for {self.tmp})")
            return
        check_out_dir(self.out, overwrite)
        if self.tmp.exists() and not overwrite:
            raise UsageError(f"an interrupted run of {self.out} is in {self.tmp}: continue it with --resume, or "
                             f"start again with --overwrite")

    def __enter__(self) -> Path:
        if not self.writer:
            return self.tmp
        if self.resume:
            return self.tmp
        missing = []
        parent = self.out.parent
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        for p in reversed(missing):
            p.mkdir()
            self._made.append(p)
        if self.tmp.exists():  # --overwrite: an interrupted run of the same name is dropped
            shutil.rmtree(self.tmp)
        self.tmp.mkdir()
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.writer:
            return
        if exc_type is None:
            old = None
            if self.out.exists():  # --overwrite: set the old run aside until the new one is in place
                old = self.out.parent / f".{self.out.name}.old-{os.getpid()}"
                os.replace(self.out, old)
            os.replace(self.tmp, self.out)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
            return
        if self.keep(self.tmp):
            self.kept = True
            return
        shutil.rmtree(self.tmp, ignore_errors=True)
        for p in reversed(self._made):  # parents this run created, deepest first
            try:
                p.rmdir()
            except OSError:
                pass
