"""The run directory: ``run_to_dir`` writes one, complete, for a config; ``RunDir`` builds it under a
temporary name and renames it into place only when complete.

A finished run directory holds::

    config.json      the config, every plugin's resolved settings ("resolved") and the command ("command")
    metrics.json     the four scores, the gap closed, every metric, seconds per stage, origins, versions
    history.json     stage -> one record per epoch (training loss terms, validation metrics)
    report.md        the results for people, with the plots
    plots/           results.png, training.png
    checkpoints/     teacher.pt, baseline.pt, student.pt: {"state_dict", "task", "backbone", "backbone_args",
                     "image_size", "channels"}
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
from pathlib import Path
from typing import Callable

from ..config import RunConfig
from ..engine import distributed as ddp
from ..engine.cache import ModelCache
from ..errors import Interrupted, OccdistillError, UsageError
from ..io import write_json, write_text
from .artifacts import make_plots, report_markdown
from .pipeline import RESUME_DIR, ProtocolRun, RunResult, finish_run
from .reporting import Reporter


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


def resumable_config(out: str | Path) -> tuple[RunConfig, str]:
    """The config and command of the interrupted run of ``out`` (from ``.OUT.partial/config.json``).
    ``UsageError`` when there is none: a finished run, nothing there, or no config saved."""
    out = Path(out)
    saved = partial_dir(out) / "config.json"
    if not saved.is_file():
        RunDir(out, resume=True)  # says why: a finished run, or nothing there
        raise UsageError(f"{partial_dir(out)} has no config.json: it cannot be resumed; start again with --overwrite")
    recorded = json.loads(saved.read_text())
    return RunConfig.from_dict(recorded), recorded.get("command", "")


def _has_state(tmp: Path) -> bool:
    # stage states and finished stages: either is worth keeping for --resume
    return any((tmp / "checkpoints" / RESUME_DIR).rglob("*.pt"))


def run_to_dir(cfg: RunConfig | None, out: str | Path, *, resume: bool = False, overwrite: bool = False,
               reporter: Reporter | None = None, cache: ModelCache | None = None,
               command: str | None = None) -> RunResult:
    """Run the protocol for ``cfg`` and write the complete run directory ``out`` (files: module docstring).

    The directory is built as ``.OUT.partial`` beside ``out`` and renamed to ``out`` only when complete.
    Each stage saves its state there as it trains: when a run stops (an error, Ctrl-C, a kill) after a
    stage state was saved, the partial directory stays, and ``run_to_dir(None, out, resume=True)`` (or
    ``occdistill run --resume OUT``) continues it with its own config; otherwise it is removed.

    ``overwrite``: replace an existing ``out``, or an interrupted run of it. ``reporter``: where progress
    goes (None: nowhere). ``cache``: the run cache (None: none; the command line's is
    ``ModelCache(io.default_cache_dir())``). ``command``: what config.json and report.md say made the run
    (default: this call). With ``resume``, ``cfg`` is None or must equal the saved config.

    Under torchrun every process calls this; rank 0 alone writes, and its result alone has ``run_dir``.
    Raises ``UsageError`` before anything is written for an ``out`` that exists (without ``overwrite``)
    or bad plugins or options; a failure after a stage state was saved names the resume command.
    """
    out = Path(out)
    if resume:
        saved, command = resumable_config(out)
        if cfg is not None and cfg.to_dict() != saved.to_dict():
            raise UsageError(f"resume continues the run in {partial_dir(out)} with its own settings; pass no config")
        cfg = saved
    elif cfg is None:
        raise UsageError("run_to_dir needs a config (RunConfig.from_options(...)), or resume=True")
    if command is None:
        command = f"run_to_dir(cfg, {str(out)!r})"
    # the checkpoints of the directory being built; joins the torchrun group, so that only rank 0 touches it
    protocol = ProtocolRun(cfg, reporter, cache, checkpoint_dir=partial_dir(out) / "checkpoints")
    writer = ddp.is_main()
    try:
        if writer and not resume:
            check_out_dir(out, overwrite)
        protocol.preflight()  # names, options, backbone and weights checked before anything is written
        rundir = RunDir(out, overwrite=overwrite, resume=resume, keep=_has_state, writer=writer)
        try:
            with rundir as tmp:
                if writer and not resume:
                    write_json(tmp / "config.json", {**cfg.to_dict(), "resolved": protocol.settings,
                                                     "command": command})
                    (tmp / "checkpoints").mkdir()
                ddp.barrier()
                if resume:
                    protocol.reporter.info(f"resuming {out} from {tmp / 'checkpoints'}")
                result = protocol.run()
                if writer:
                    write_json(tmp / "metrics.json", result.metrics)
                    write_json(tmp / "history.json", result.histories)
                    make_plots(tmp / "plots", result.metrics, result.histories)
                    write_text(tmp / "report.md", report_markdown(cfg, result.metrics, command))
                    finish_run(tmp / "checkpoints")
                ddp.barrier()
        except (OccdistillError, KeyboardInterrupt) as exc:
            if rundir.kept:
                hint = f"continue with: occdistill run --resume {shlex.quote(str(out))}"
                if isinstance(exc, KeyboardInterrupt):
                    raise Interrupted(f"interrupted; the last checkpoint is kept; {hint}") from exc
                raise type(exc)(f"{exc}; {hint}") from exc
            raise
    finally:
        ddp.teardown()
    result.run_dir = out if writer else None
    return result
