"""Running a suite: every cell checked before anything trains, then each (cell, seed) not yet in
``results.jsonl`` run by the protocol, one line written per finished run, and the summary made.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import subprocess
import time
from contextlib import contextmanager
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, Iterator

import torch

from ..config import RunConfig
from ..errors import Interrupted, OccdistillError, UsageError
from ..models.network import build_model
from ..protocol.pipeline import preflight
from ..protocol.pipeline import run as run_pipeline
from ..registry import registry
from ..engine.trainer import resolve_amp, resolve_device
from .results import RESUME, RESULTS, SUITE_META, add_result, clear, config_digest, read_results, write_meta
from .suite import Cell, Suite, SuiteError
from .summary import write_report


@contextmanager
def _about(here: str, field: str) -> Iterator[None]:
    """A failure inside becomes a ``SuiteError`` naming the cell and ``field``."""
    try:
        yield
    except SuiteError:
        raise
    except OccdistillError as exc:
        raise SuiteError(f"{here}: field '{field}': {exc}", field) from exc


def _data_field(cfg: RunConfig) -> str:
    """The suite field a data set's options come from: ``data`` (the prepared folder) when the experiment
    names one, else ``dataset_args`` when it sets any, else ``dataset``."""
    return "data" if "data" in cfg.dataset_args else "dataset_args" if cfg.dataset_args else "dataset"


def _check_cell(here: str, cfg: RunConfig) -> None:
    """Build each of a cell's plugins with its options, open its data and build its network, each under
    the field it comes from (a failure raises ``SuiteError`` with that field); then the protocol's own
    preflight, for anything left."""
    with _about(here, "task"):
        task, _ = registry("tasks").build(cfg.task)
    with _about(here, "occlusion"):
        registry("occlusions").build(cfg.occlusion, **cfg.occlusion_args)
    with _about(here, "distiller"):
        registry("distillers").build(cfg.distiller, task=task, **cfg.distiller_args)
    data_field = _data_field(cfg)
    with _about(here, data_field):
        dataset, _ = registry("datasets").build(cfg.dataset, **cfg.dataset_args)
    if task.label not in getattr(dataset, "labels", (task.label,)):
        raise SuiteError(f"{here}: field 'task': task '{cfg.task}' needs '{task.label}' labels; data set "
                         f"'{cfg.dataset}' has {', '.join(dataset.labels) or 'none'}", "task")
    with _about(here, "device"):
        device = resolve_device(cfg.device)
    with _about(here, "amp"):
        resolve_amp(cfg.amp, device)
    with _about(here, "backbone"):  # the architecture at this size; its starting weights come next
        build_model(cfg.backbone, in_chans=cfg.channels or dataset.native_channels, image_size=cfg.image_size,
                    output_dim=1, backbone_args=cfg.backbone_args)
    # what the protocol checks beyond the above: the starting weights (a download, a --weights file)
    with _about(here, "weights" if cfg.weights else "pretrained" if cfg.pretrained else "settings"):
        preflight(cfg)
    with _about(here, data_field):
        for split in ("train", "val", "test"):
            if dataset.size(split) < 1:
                raise UsageError(f"the {split} split is empty")


def _place(suite: Suite, cell: Cell) -> str:
    return f"suite {suite.path.name}: cell {cell.id} ({cell.where.split(': ', 1)[-1].split(' (')[0]})"


def check_suite(suite: Suite, reporter: Any = None, cells: set[str] | None = None) -> dict[str, RunConfig]:
    """Build every cell's config and plugins, and open its data, before anything trains.

    ``cells``: the ids of the cells that will run (``--only``); only those are built and their data
    opened, so that a piece of a suite needs only its own data prepared. Every cell's plugin names and
    settings are still checked. Returns ``{cell id + seed: config}`` for every cell. The first problem
    raises a ``SuiteError`` naming the cell and the field (its ``field``).
    """
    configs: dict[str, RunConfig] = {}
    checked: set[str] = set()
    kinds = (("dataset", "datasets"), ("task", "tasks"), ("occlusion", "occlusions"), ("distiller", "distillers"))
    for cell in suite.cells:
        here = _place(suite, cell)
        for fld, kind in kinds:
            with _about(here, fld):
                registry(kind).get(getattr(cell, fld) if fld != "distiller" else cell.distiller.name)
        with _about(here, "settings"):
            cfg = cell.config(suite.seeds[0], suite.preset)
        with _about(here, "backbone"):
            registry("backbones").get(cfg.backbone)
        # plugins with their options, the data (prepared? right labels?), the backbone at this size
        probe = json.dumps({k: v for k, v in cfg.to_dict().items() if k != "seed"}, sort_keys=True, default=str)
        if probe not in checked and (cells is None or cell.id in cells):
            _check_cell(here, cfg)
            checked.add(probe)
        for seed in suite.seeds:
            configs[f"{cell.id}#{seed}"] = cell.config(seed, suite.preset)
    return configs


def git_commit(start: Path) -> str | None:
    """The checkout's commit (``+dirty`` when files differ from it), or None outside a git checkout."""
    try:
        root = start if start.is_dir() else start.parent
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def device_name(device: str) -> str:
    """The GPU's name for a CUDA device, else the processor's model, the vector instructions torch's CPU
    kernels use on it and the core count: CPU training is not bit-identical across processors (the
    kernels round differently), so a results line says which one made it."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"{cpu_model()} ({torch.backends.cpu.get_cpu_capability()}), {os.cpu_count()} cores"


def cpu_model() -> str:
    """The processor's model name (Linux: /proc/cpuinfo), else what ``platform`` knows of it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} CPU"


def _checkpoint_dir(out: Path, cell: Cell, seed: int, digest: str) -> Path:
    """Where one run of a suite keeps its stage checkpoints until its line is written."""
    return out / RESUME / f"{cell.id.replace('/', '-')}-s{seed}-{digest}"


def selected_runs(suite: Suite, only: tuple[str, ...] = (), seeds: tuple[int, ...] = ()) -> list[tuple[Cell, int]]:
    """The (cell, seed) runs whose cell id matches a pattern of ``only`` (a glob, or a part of the id) and
    whose seed is one of ``seeds``, in the suite's order; no filter where either is empty. A pattern list
    that matches nothing, or a seed the suite does not run, is a ``SuiteError``."""
    todo = [(c, s) for c, s in suite.runs() if not only or any(fnmatch(c.id, p) or p in c.id for p in only)]
    if only and not todo:
        raise SuiteError(f"--only {' '.join(only)} matches no cell of suite {suite.name}; cells: "
                         + ", ".join(sorted({c.id for c in suite.cells})[:8]) + " ...")
    unknown = sorted(set(seeds) - set(suite.seeds))
    if unknown:
        raise SuiteError(f"--seed {', '.join(map(str, unknown))}: suite {suite.name} runs seeds "
                         f"{', '.join(map(str, suite.seeds))} only")
    return [(c, s) for c, s in todo if not seeds or s in seeds]


def run_suite(suite: Suite, out: Path, reporter: Any, cache: Any, only: tuple[str, ...] = (),
              report: bool = True, command: str | None = None, resume: bool = False,
              overwrite: bool = False, seeds: tuple[int, ...] = ()) -> dict[str, Any]:
    """Run every cell x seed not already in ``out/results.jsonl`` with the same config; then summarise.

    An ``out`` that holds results is continued with ``resume`` (finished runs are skipped, an unfinished
    one continues from its last stage checkpoint) or started again with ``overwrite``. ``only`` and ``seeds``
    run a piece: see ``selected_runs``. A Ctrl-C, wherever
    it comes, is an ``Interrupted`` that says what was kept and how to continue.
    """
    try:
        return _run_suite(suite, out, reporter, cache, only, seeds, report, command, resume, overwrite)
    except (KeyboardInterrupt, Interrupted) as exc:
        finished = len(read_results(out))  # none when nothing was written
        kept = f"finished runs are kept in {out / RESULTS} ({finished} so far)" if finished else "no run had finished"
        raise Interrupted.saying(exc, f"{kept}; the run in progress continues from its last checkpoint, if one "
                                      "was saved: rerun the same command with --resume (not --overwrite)") from exc


def _run_suite(suite: Suite, out: Path, reporter: Any, cache: Any, only: tuple[str, ...], seeds: tuple[int, ...],
               report: bool, command: str | None, resume: bool, overwrite: bool) -> dict[str, Any]:
    todo = selected_runs(suite, only, seeds)
    configs = check_suite(suite, reporter, cells={c.id for c, _ in todo})
    meta = out / SUITE_META
    started = (out / RESULTS).is_file() or (out / RESUME).is_dir()
    if started and not (resume or overwrite):
        raise SuiteError(f"--out {out} already holds results: continue them with --resume, or start again "
                         f"with --overwrite")
    if overwrite:
        clear(out)
    if meta.is_file():
        other = json.loads(meta.read_text()).get("name")
        if other != suite.name:
            raise SuiteError(f"--out {out} holds the results of suite '{other}', not '{suite.name}'; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    write_meta(out, suite, command)
    rows = read_results(out)
    done = {(r["cell"], r["seed"]): r.get("config_digest") for r in rows}
    pending = [(c, s) for c, s in todo if done.get((c.id, s)) != config_digest(configs[f"{c.id}#{s}"])]
    for cell, seed in todo:  # a kill between a finished run's line and its clean-up leaves its folder behind
        if (cell, seed) not in pending:
            shutil.rmtree(_checkpoint_dir(out, cell, seed, done[(cell.id, seed)]), ignore_errors=True)
    commit = git_commit(Path(__file__).resolve().parent)  # the code that runs, not the suite file's checkout
    skipped = len(todo) - len(pending)
    filters = "".join(f", filtered by {flag}" for flag, used in (("--only", only), ("--seed", seeds)) if used)
    reporter.info(f"suite {suite.name}: {len(todo)} runs ({len(suite.cells)} cells x {len(suite.seeds)} seeds"
                  f"{filters}); {skipped} already in {out / RESULTS}, {len(pending)} to run")
    try:
        with reporter.suite(len(todo), skipped) as bar:
            for cell, seed in pending:
                cfg = configs[f"{cell.id}#{seed}"]
                bar.note(f"{cell.id} seed {seed}")
                t0 = time.perf_counter()
                digest = config_digest(cfg)
                checkpoints = _checkpoint_dir(out, cell, seed, digest)
                checkpoints.mkdir(parents=True, exist_ok=True)
                # a state left by another version of the toolkit is dropped, not refused: the suite goes on
                result = run_pipeline(cfg, reporter, cache, checkpoint_dir=checkpoints, discard_stale=True)
                metrics = result.metrics
                # the validation histories too: each stage chose its epoch on them, and a stage that came from
                # the run cache has no run directory that would keep them
                row = {"suite": suite.name, "cell": cell.id, "seed": seed, "label": cell.distiller.tag,
                       **metrics, "histories": result.histories, "config": cfg.to_dict(), "config_digest": digest,
                       "wall_seconds": round(time.perf_counter() - t0, 2), "git_commit": commit,
                       "versions": {**metrics.get("versions", {}), "python": platform.python_version(),
                                    "cpu_threads": torch.get_num_threads()},
                       "device_name": device_name(metrics.get("device", "cpu")),
                       "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
                rows = add_result(out, row)
                shutil.rmtree(checkpoints, ignore_errors=True)
                bar.advance(1)
        if (out / RESUME).is_dir() and not any((out / RESUME).iterdir()):
            with contextlib.suppress(OSError):  # another piece running at once may have just made a folder there
                (out / RESUME).rmdir()
    except BaseException:
        if report and rows:  # a failure or Ctrl-C: the summary still shows every finished run
            try:
                write_report(out, suite)
            except BaseException:  # a second Ctrl-C here must not hide the first failure
                pass
        raise
    summary = write_report(out, suite) if report else {}
    return {"runs": len(todo), "skipped": skipped, "ran": len(pending), "summary": summary}
