"""Benchmark suites: a YAML file names data sets x tasks x occlusions x distillers x seeds and the run
settings; every cell is scored by the same protocol and appended to ``results.jsonl``.

A suite file::

    name: quick
    seeds: [0, 1, 2]
    distillers: [finetune, kd, triplet, combined]      # or {name: triplet, args: {margin: 0.3}, label: ...}
    settings: {backbone: simple-cnn, image_size: 40}   # RunConfig fields for every cell
    experiments:
      - dataset: ferplus
        data: ferplus                                   # prepared directory, relative to --data-root
        tasks: [expression]
        occlusions: [upper-half, mask]
        settings: {...}                                 # overrides for this experiment only
    references: [...]                                   # published figures shown beside a cell

Everything is checked before the first cell trains: plugin names, options, fields and prepared data.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..config import RunConfig, _FIELDS
from ..errors import OccdistillError, UsageError
from ..registry import registry

RESULTS = "results.jsonl"
# what a suite's matrix sets; the settings may not
MATRIX_FIELDS = ("dataset", "task", "occlusion", "distiller", "seed", "distiller_args")
TOP_FIELDS = {"name", "description", "seeds", "distillers", "settings", "experiments", "references", "preset"}
EXPERIMENT_FIELDS = {"dataset", "data", "tasks", "occlusions", "settings", "dataset_args"}
REFERENCE_FIELDS = {"dataset", "task", "occlusion", "source", "setting", "note", "values"}


class SuiteError(UsageError):
    """A suite file that cannot run as written: the message names the place and the field."""


@dataclass(frozen=True)
class DistillerSpec:
    name: str
    args: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    @property
    def tag(self) -> str:
        return self.label or self.name


@dataclass(frozen=True)
class Cell:
    """One (data set, task, occlusion, distiller) combination, run once per seed."""

    dataset: str
    task: str
    occlusion: str
    distiller: DistillerSpec
    settings: dict[str, Any]
    where: str  # where in the file it came from, for messages

    @property
    def id(self) -> str:
        return f"{self.dataset}/{self.task}/{self.occlusion}/{self.distiller.tag}"

    def config(self, seed: int, preset: str) -> RunConfig:
        options = {k: v for k, v in self.settings.items() if k != "dataset_args"}
        return RunConfig.from_options(preset, task=self.task, occlusion=self.occlusion,
                                      distiller=self.distiller.name, distiller_args=dict(self.distiller.args),
                                      dataset=self.dataset, seed=seed,
                                      dataset_args=dict(self.settings.get("dataset_args") or {}), **options)


@dataclass
class Suite:
    name: str
    path: Path
    description: str
    preset: str
    seeds: list[int]
    cells: list[Cell]
    references: list[dict[str, Any]]
    raw: dict[str, Any]

    def runs(self) -> Iterator[tuple[Cell, int]]:
        """Cells grouped so that one (task, occlusion) finishes, all seeds and distillers, before the next:
        partial results are whole comparisons, and a seed's teacher and baseline are reused at once."""
        groups: dict[tuple[str, str, str], list[Cell]] = {}
        for cell in self.cells:
            groups.setdefault((cell.dataset, cell.task, cell.occlusion), []).append(cell)
        for cells in groups.values():
            for seed in self.seeds:
                for cell in cells:
                    yield cell, seed


def suite_dirs() -> list[Path]:
    """Where ``--suite NAME`` is looked up: ./benchmarks/suites, then the checkout this package is in."""
    here = Path(__file__).resolve().parents[2] / "benchmarks" / "suites"
    return [Path("benchmarks") / "suites", here]


def find_suite(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.is_file():
        if not p.is_file():
            raise SuiteError(f"suite file not found: {p}")
        return p
    for d in suite_dirs():
        for ext in (".yaml", ".yml"):
            if (d / f"{name_or_path}{ext}").is_file():
                return d / f"{name_or_path}{ext}"
    known = sorted({f.stem for d in suite_dirs() if d.is_dir() for f in d.glob("*.y*ml")})
    raise SuiteError(f"no suite named '{name_or_path}'" + (f"; suites: {', '.join(known)}" if known else "")
                     + " (or pass the path of a .yaml file)")


def _need(mapping: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in mapping or mapping[key] is None:
        raise SuiteError(f"{where}: missing field '{key}'")
    value = mapping[key]
    if not isinstance(value, kind):
        names = " or ".join(t.__name__ for t in (kind if isinstance(kind, tuple) else (kind,)))
        raise SuiteError(f"{where}: field '{key}' must be a {names}, not {type(value).__name__} ({value!r})")
    return value


def _names(mapping: dict[str, Any], key: str, where: str) -> list[str]:
    values = _need(mapping, key, (list, str), where)
    values = [values] if isinstance(values, str) else values
    if not values or not all(isinstance(v, str) and v for v in values):
        raise SuiteError(f"{where}: field '{key}' must be a non-empty list of names")
    return values


def _unknown(mapping: dict[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(mapping) - allowed)
    if extra:
        raise SuiteError(f"{where}: unknown field(s) {', '.join(repr(e) for e in extra)}; "
                         f"allowed: {', '.join(sorted(allowed))}")


def _settings(raw: Any, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SuiteError(f"{where}: field 'settings' must be a mapping of run options")
    settings = {str(k).replace("-", "_"): v for k, v in raw.items()}
    bad = sorted(k for k in settings if k not in _FIELDS or k in MATRIX_FIELDS or k == "preset")
    if bad:
        why = [f"'{k}' is set by the suite's matrix" if k in MATRIX_FIELDS or k == "preset"
               else f"'{k}' is not a run option (run options: {', '.join(sorted(_FIELDS - set(MATRIX_FIELDS)))})"
               for k in bad]
        raise SuiteError(f"{where}: settings: {'; '.join(why)}")
    return settings


def _distillers(raw: Any, where: str) -> list[DistillerSpec]:
    items = raw if isinstance(raw, list) else [raw]
    specs = []
    for i, item in enumerate(items):
        here = f"{where}: distillers[{i}]"
        if isinstance(item, str):
            specs.append(DistillerSpec(item))
        elif isinstance(item, dict):
            _unknown(item, {"name", "args", "label"}, here)
            name = _need(item, "name", str, here)
            args = item.get("args") or {}
            if not isinstance(args, dict):
                raise SuiteError(f"{here}: field 'args' must be a mapping")
            specs.append(DistillerSpec(name, {k.replace("-", "_"): v for k, v in args.items()},
                                       str(item.get("label") or "")))
        else:
            raise SuiteError(f"{here}: a distiller is a name or {{name, args, label}}")
    tags = [s.tag for s in specs]
    dup = sorted({t for t in tags if tags.count(t) > 1})
    if dup:
        raise SuiteError(f"{where}: distillers: '{dup[0]}' appears twice; give one a 'label'")
    if not specs:
        raise SuiteError(f"{where}: field 'distillers' is empty")
    return specs


def load_suite(name_or_path: str, data_root: Path | None = None) -> Suite:
    """Read and check a suite file's structure (no plugin is built yet: see ``check_suite``)."""
    import yaml

    path = find_suite(name_or_path)
    where = f"suite {path.name}"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise SuiteError(f"{where}: not valid YAML{at}: {getattr(exc, 'problem', exc)}") from exc
    except OSError as exc:
        raise SuiteError(f"{where}: cannot read: {exc.strerror}") from exc
    if not isinstance(raw, dict):
        raise SuiteError(f"{where}: the file must hold a mapping (name, seeds, distillers, experiments)")
    _unknown(raw, TOP_FIELDS, where)
    name = str(raw.get("name") or path.stem)
    seeds = _need(raw, "seeds", list, where)
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds) or len(set(seeds)) != len(seeds):
        raise SuiteError(f"{where}: field 'seeds' must be a list of distinct integers")
    preset = str(raw.get("preset") or "default")
    distillers = _distillers(_need(raw, "distillers", (list, str, dict), where), where)
    common = _settings(raw.get("settings"), where)
    experiments = _need(raw, "experiments", list, where)
    if not experiments:
        raise SuiteError(f"{where}: field 'experiments' is empty")
    cells: list[Cell] = []
    for i, exp in enumerate(experiments):
        here = f"{where}: experiments[{i}]"
        if not isinstance(exp, dict):
            raise SuiteError(f"{here}: an experiment is a mapping (dataset, tasks, occlusions, ...)")
        dataset = _need(exp, "dataset", str, here)
        here = f"{where}: experiments[{i}] ({dataset})"
        _unknown(exp, EXPERIMENT_FIELDS, here)
        tasks, occlusions = _names(exp, "tasks", here), _names(exp, "occlusions", here)
        settings = {**common, **_settings(exp.get("settings"), here)}
        dataset_args = dict(settings.get("dataset_args") or {})
        dataset_args.update(exp.get("dataset_args") or {})
        if exp.get("data") is not None:
            data = Path(str(exp["data"])).expanduser()
            if not data.is_absolute():
                data = (data_root or Path(".")) / data
            dataset_args["data"] = str(data.resolve())
        if dataset_args:
            settings["dataset_args"] = dataset_args
        for task in tasks:
            for occlusion in occlusions:
                for spec in distillers:
                    cells.append(Cell(dataset, task, occlusion, spec, settings, here))
    ids = [c.id for c in cells]
    dup = next((c for c in ids if ids.count(c) > 1), None)
    if dup:
        raise SuiteError(f"{where}: cell {dup} appears twice")
    references = raw.get("references") or []
    if not isinstance(references, list):
        raise SuiteError(f"{where}: field 'references' must be a list")
    for i, ref in enumerate(references):
        here = f"{where}: references[{i}]"
        if not isinstance(ref, dict):
            raise SuiteError(f"{here}: a reference is a mapping")
        _unknown(ref, REFERENCE_FIELDS, here)
        for key in ("dataset", "task", "occlusion", "source"):
            _need(ref, key, str, here)
        values = _need(ref, "values", dict, here)
        if not all(isinstance(v, (int, float)) for v in values.values()):
            raise SuiteError(f"{here}: field 'values' maps model names to numbers")
    return Suite(name, path, str(raw.get("description") or "").strip(), preset, [int(s) for s in seeds], cells,
                 references, raw)


def check_suite(suite: Suite, reporter: Any = None) -> dict[str, RunConfig]:
    """Build every cell's config and plugins, and open its data, before anything trains.

    Returns ``{cell id + seed: config}``. The first problem raises a ``SuiteError`` naming the cell and
    the field.
    """
    from ..protocol.pipeline import preflight

    configs: dict[str, RunConfig] = {}
    checked: dict[str, str] = {}
    kinds = (("dataset", "datasets"), ("task", "tasks"), ("occlusion", "occlusions"), ("distiller", "distillers"))
    for cell in suite.cells:
        here = f"suite {suite.path.name}: cell {cell.id} ({cell.where.split(': ', 1)[-1].split(' (')[0]})"
        for fld, kind in kinds:
            try:
                registry(kind).get(getattr(cell, fld) if fld != "distiller" else cell.distiller.name)
            except OccdistillError as exc:
                raise SuiteError(f"{here}: field '{fld}': {exc}") from exc
        try:
            cfg = cell.config(suite.seeds[0], suite.preset)
        except OccdistillError as exc:
            raise SuiteError(f"{here}: field 'settings': {exc}") from exc
        try:
            registry("backbones").get(cfg.backbone)
        except OccdistillError as exc:
            raise SuiteError(f"{here}: field 'backbone': {exc}") from exc
        # plugins with their options, the data (prepared? right labels?), the backbone at this size
        probe = json.dumps({k: v for k, v in cfg.to_dict().items() if k != "seed"}, sort_keys=True, default=str)
        if probe not in checked:
            try:
                dataset = preflight(cfg).dataset
                for split in ("train", "val", "test"):
                    if dataset.size(split) < 1:
                        raise UsageError(f"the {split} split is empty")
            except OccdistillError as exc:
                fld = _field_of(str(exc), cfg)
                raise SuiteError(f"{here}: field '{fld}': {exc}") from exc
            checked[probe] = cell.id
        for seed in suite.seeds:
            configs[f"{cell.id}#{seed}"] = cell.config(seed, suite.preset)
    return configs


def _field_of(message: str, cfg: RunConfig) -> str:
    """Which suite field a preflight failure is about, from the option it names."""
    low = message.lower()
    if "prepare" in low or "--data" in low or "manifest" in low or "prepared" in low:
        return "data"
    for fld, value in (("distiller", cfg.distiller), ("occlusion", cfg.occlusion), ("task", cfg.task),
                       ("backbone", cfg.backbone), ("dataset", cfg.dataset)):
        if f"'{value}'" in message or value in low.split():
            return fld
    return "settings"


def config_digest(cfg: RunConfig) -> str:
    """Identifies a finished run in results.jsonl. Fields at their defaults are left out, so that a run
    option added in a later version (with a default that changes nothing) does not redo finished cells."""
    defaults = RunConfig().to_dict()
    changed = {k: v for k, v in cfg.to_dict().items() if k not in defaults or defaults[k] != v}
    return hashlib.sha256(json.dumps(changed, sort_keys=True, default=str).encode()).hexdigest()[:16]


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


def read_results(out: Path) -> list[dict[str, Any]]:
    """The lines of ``results.jsonl``; a line cut short by a kill is ignored (it is rewritten whole)."""
    path = out / RESULTS
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "cell" in row and "seed" in row:
            rows.append(row)
    return rows


def _append(out: Path, rows: list[dict[str, Any]]) -> None:
    from ..io import write_text

    # the whole file is replaced atomically: a kill leaves the old lines or the new ones, never half a line
    write_text(out / RESULTS, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def write_meta(suite: Suite, out: Path, command: str | None) -> None:
    """What ``bench report`` needs besides the results: the suite's name, text, references, command."""
    from ..io import write_json
    from .summary import SUITE_META

    write_json(out / SUITE_META, {"name": suite.name, "file": suite.path.as_posix(), "description": suite.description,
                                  "seeds": suite.seeds, "preset": suite.preset, "references": suite.references,
                                  "command": command, "cells": [c.id for c in suite.cells]})


RESUME = ".resume"  # OUT/.resume/<run>/: the stage checkpoints of runs not finished yet


def _clear(out: Path) -> None:
    import shutil

    from .summary import SUITE_META

    for name in (RESULTS, SUITE_META, "summary.md", "summary.csv"):
        (out / name).unlink(missing_ok=True)
    for name in ("plots", RESUME):
        shutil.rmtree(out / name, ignore_errors=True)


def run_suite(suite: Suite, out: Path, reporter: Any, cache: Any, only: tuple[str, ...] = (),
              report: bool = True, command: str | None = None, resume: bool = False,
              overwrite: bool = False) -> dict[str, Any]:
    """Run every cell x seed not already in ``out/results.jsonl`` with the same config; then summarise.

    An ``out`` that holds results is continued with ``resume`` (finished runs are skipped, an unfinished
    one continues from its last stage checkpoint) or started again with ``overwrite``.
    """
    import shutil
    from fnmatch import fnmatch

    import torch

    from ..protocol.pipeline import run as run_pipeline
    from .summary import write_report

    configs = check_suite(suite, reporter)
    todo = [(c, s) for c, s in suite.runs() if not only or any(fnmatch(c.id, p) or p in c.id for p in only)]
    if only and not todo:
        raise SuiteError(f"--only {' '.join(only)} matches no cell of suite {suite.name}; cells: "
                         + ", ".join(sorted({c.id for c in suite.cells})[:8]) + " ...")
    from .summary import SUITE_META

    meta = out / SUITE_META
    started = (out / RESULTS).is_file() or (out / RESUME).is_dir()
    if started and not (resume or overwrite):
        raise SuiteError(f"--out {out} already holds results: continue them with --resume, or start again "
                         f"with --overwrite")
    if overwrite:
        _clear(out)
    if meta.is_file():
        other = json.loads(meta.read_text()).get("name")
        if other != suite.name:
            raise SuiteError(f"--out {out} holds the results of suite '{other}', not '{suite.name}'; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    write_meta(suite, out, command)
    rows = read_results(out)
    done = {(r["cell"], r["seed"]): r.get("config_digest") for r in rows}
    pending = [(c, s) for c, s in todo if done.get((c.id, s)) != config_digest(configs[f"{c.id}#{s}"])]
    commit = git_commit(Path(__file__).resolve().parent)  # the code that runs, not the suite file's checkout
    skipped = len(todo) - len(pending)
    reporter.info(f"suite {suite.name}: {len(todo)} runs ({len(suite.cells)} cells x {len(suite.seeds)} seeds"
                  + (", filtered by --only" if only else "") + f"); {skipped} already in {out / RESULTS}, "
                  f"{len(pending)} to run")
    try:
        with reporter.suite(len(todo), skipped) as bar:
            for cell, seed in pending:
                cfg = configs[f"{cell.id}#{seed}"]
                bar.note(f"{cell.id} seed {seed}")
                t0 = time.perf_counter()
                digest = config_digest(cfg)
                checkpoints = out / RESUME / f"{cell.id.replace('/', '-')}-s{seed}-{digest}"
                checkpoints.mkdir(parents=True, exist_ok=True)
                # a state left by another version of the toolkit is dropped, not refused: the suite goes on
                metrics = run_pipeline(cfg, reporter, cache, checkpoint_dir=checkpoints, discard_stale=True).metrics
                row = {"suite": suite.name, "cell": cell.id, "seed": seed, "label": cell.distiller.tag,
                       **metrics, "config": cfg.to_dict(), "config_digest": config_digest(cfg),
                       "wall_seconds": round(time.perf_counter() - t0, 2), "git_commit": commit,
                       "versions": {**metrics.get("versions", {}), "python": platform.python_version(),
                                    "cpu_threads": torch.get_num_threads()},
                       "device_name": device_name(metrics.get("device", "cpu")),
                       "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
                rows = [r for r in rows if (r["cell"], r["seed"]) != (cell.id, seed)] + [row]
                _append(out, rows)
                shutil.rmtree(checkpoints, ignore_errors=True)
                bar.advance(1)
        if (out / RESUME).is_dir() and not any((out / RESUME).iterdir()):
            (out / RESUME).rmdir()
    except BaseException:
        if report and rows:  # a failure or Ctrl-C: the summary still shows every finished run
            try:
                write_report(out, suite)
            except Exception:
                pass
        raise
    summary = write_report(out, suite) if report else {}
    return {"runs": len(todo), "skipped": skipped, "ran": len(pending), "summary": summary}


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores"
