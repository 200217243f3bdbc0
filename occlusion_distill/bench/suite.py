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

``load_suite`` checks the file's structure; ``bench.runner.check_suite`` then builds every cell's plugins
and opens its data, so everything is checked before the first cell trains. A problem raises a
``SuiteError`` whose ``field`` names the suite field it is about.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml

from ..config import RunConfig, _FIELDS, option_name
from ..errors import UsageError

# what a suite's matrix sets; the settings may not
MATRIX_FIELDS = ("dataset", "task", "occlusion", "distiller", "seed", "distiller_args")
TOP_FIELDS = {"name", "description", "seeds", "distillers", "settings", "experiments", "references", "preset"}
EXPERIMENT_FIELDS = {"dataset", "data", "tasks", "occlusions", "settings", "dataset_args"}
REFERENCE_FIELDS = {"dataset", "task", "occlusion", "source", "setting", "note", "values"}


class SuiteError(UsageError):
    """A suite that cannot run as written. The message names the place and the field; ``field`` is the
    suite field it is about (``seeds``, ``occlusions``, ``distillers[1]``'s ``args``..., a cell's
    ``task``, ``occlusion``, ``distiller``, ``dataset``, ``data``, ``backbone`` or ``settings``), or None
    when it is about no one field (the file itself, ``--out``, ``--only``)."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


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
        raise SuiteError(f"{where}: missing field '{key}'", key)
    value = mapping[key]
    if not isinstance(value, kind):
        names = " or ".join(t.__name__ for t in (kind if isinstance(kind, tuple) else (kind,)))
        raise SuiteError(f"{where}: field '{key}' must be a {names}, not {type(value).__name__} ({value!r})", key)
    return value


def _names(mapping: dict[str, Any], key: str, where: str) -> list[str]:
    values = _need(mapping, key, (list, str), where)
    values = [values] if isinstance(values, str) else values
    if not values or not all(isinstance(v, str) and v for v in values):
        raise SuiteError(f"{where}: field '{key}' must be a non-empty list of names", key)
    return values


def _unknown(mapping: dict[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(mapping) - allowed)
    if extra:
        raise SuiteError(f"{where}: unknown field(s) {', '.join(repr(e) for e in extra)}; "
                         f"allowed: {', '.join(sorted(allowed))}", str(extra[0]))


def _settings(raw: Any, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SuiteError(f"{where}: field 'settings' must be a mapping of run options", "settings")
    settings = {str(k).replace("-", "_"): v for k, v in raw.items()}
    bad = sorted(k for k in settings if k not in _FIELDS or k in MATRIX_FIELDS or k == "preset")
    if bad:
        why = [f"'{k}' is set by the suite's matrix" if k in MATRIX_FIELDS or k == "preset"
               else f"'{k}' is not a run option (run options: {', '.join(sorted(_FIELDS - set(MATRIX_FIELDS)))})"
               for k in bad]
        raise SuiteError(f"{where}: settings: {'; '.join(why)}", "settings")
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
                raise SuiteError(f"{here}: field 'args' must be a mapping", "args")
            specs.append(DistillerSpec(name, {option_name(str(k)): v for k, v in args.items()},
                                       str(item.get("label") or "")))
        else:
            raise SuiteError(f"{here}: a distiller is a name or {{name, args, label}}", "distillers")
    tags = [s.tag for s in specs]
    dup = sorted({t for t in tags if tags.count(t) > 1})
    if dup:
        raise SuiteError(f"{where}: distillers: '{dup[0]}' appears twice; give one a 'label'", "distillers")
    if not specs:
        raise SuiteError(f"{where}: field 'distillers' is empty", "distillers")
    return specs


def load_suite(name_or_path: str, data_root: Path | None = None) -> Suite:
    """Read and check a suite file's structure (no plugin is built yet: see ``check_suite``)."""
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
        raise SuiteError(f"{where}: field 'seeds' must be a list of distinct integers", "seeds")
    preset = str(raw.get("preset") or "default")
    distillers = _distillers(_need(raw, "distillers", (list, str, dict), where), where)
    common = _settings(raw.get("settings"), where)
    experiments = _need(raw, "experiments", list, where)
    if not experiments:
        raise SuiteError(f"{where}: field 'experiments' is empty", "experiments")
    cells: list[Cell] = []
    for i, exp in enumerate(experiments):
        here = f"{where}: experiments[{i}]"
        if not isinstance(exp, dict):
            raise SuiteError(f"{here}: an experiment is a mapping (dataset, tasks, occlusions, ...)", "experiments")
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
        raise SuiteError(f"{where}: cell {dup} appears twice", "experiments")
    references = raw.get("references") or []
    if not isinstance(references, list):
        raise SuiteError(f"{where}: field 'references' must be a list", "references")
    for i, ref in enumerate(references):
        here = f"{where}: references[{i}]"
        if not isinstance(ref, dict):
            raise SuiteError(f"{here}: a reference is a mapping", "references")
        _unknown(ref, REFERENCE_FIELDS, here)
        for key in ("dataset", "task", "occlusion", "source"):
            _need(ref, key, str, here)
        values = _need(ref, "values", dict, here)
        if not all(isinstance(v, (int, float)) for v in values.values()):
            raise SuiteError(f"{here}: field 'values' maps model names to numbers", "values")
    return Suite(name, path, str(raw.get("description") or "").strip(), preset, [int(s) for s in seeds], cells,
                 references, raw)
