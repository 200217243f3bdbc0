"""``bench sweep``: choose a setting on the occluded validation faces, and only then look at test faces.

Every combination of a grid (``--grid lambda=0.5,0.9 --grid student_lr=1e-4,3e-4``) trains a student with
otherwise the same run, for each seed; teacher and baseline come once per seed from the run cache. A
setting's score is its student's best occluded validation score (the epoch a run keeps), averaged over
the seeds. The best setting is chosen on that alone, and the test faces are scored for the chosen setting
only: the other settings' test figures are never computed.

``OUT/`` holds ``sweep.jsonl`` (one line per setting and seed: the setting, the validation score and
history, the config and its digest; a rerun skips the lines it has), ``chosen.json`` (the chosen setting,
the ranking, and its test figures per seed) and ``summary.md``. ``.resume/`` keeps the checkpoints of an
unfinished training until its line is written.
"""

from __future__ import annotations

import itertools
import json
import math
import numbers
import shutil
import statistics
from pathlib import Path
from typing import Any

from ..config import RunConfig, _FIELDS, option_name
from ..engine.stage import TrainingDiverged, better_score
from ..errors import Interrupted, UsageError
from ..io import write_json, write_text
from ..protocol.pipeline import ProtocolRun
from .results import config_digest, read_jsonl

LINES = "sweep.jsonl"
CHOSEN = "chosen.json"
RESUME = ".resume"
#: run options a grid may not vary: they change what is compared or where, not the recipe
FIXED = {"seed", "task", "occlusion", "dataset", "dataset_args", "distiller", "eval_seed", "device", "preset"}


def parse_grid(axes: tuple[str, ...] | list[str]) -> dict[str, list[Any]]:
    """``["lambda=0.5,0.9", "student_lr=1e-4,3e-4"]`` -> ``{"lambda_": [0.5, 0.9], "student_lr": [...]}``.

    Values are read as JSON where they parse (numbers, true), else kept as text. A run option (a
    ``RunConfig`` field) keeps its name; any other key is a distiller option, spelt as ``--distiller-arg``
    spells it (``config.option_name``: ``lambda`` becomes ``lambda_``). Raises ``UsageError`` for a
    malformed axis, a key given twice or an option that a sweep may not vary (seed, task, occlusion, data
    set, distiller ...).
    """
    grid: dict[str, list[Any]] = {}
    for axis in axes:
        key, sep, raw = axis.partition("=")
        key = option_name(key)
        if not sep or not key.isidentifier() or not raw.strip():
            raise UsageError(f"--grid takes KEY=V1,V2,..., not '{axis}'")
        if key in FIXED:
            raise UsageError(f"--grid {key}: a sweep compares recipes for one run; give --{key.replace('_', '-')} "
                             f"among the run options instead")
        if key in grid:
            raise UsageError(f"--grid {key} is given twice")
        values = []
        for item in raw.split(","):
            try:
                values.append(json.loads(item))
            except json.JSONDecodeError:
                values.append(item.strip())
        grid[key] = values
    if not grid:
        raise UsageError("a sweep needs at least one --grid KEY=V1,V2,...")
    return grid


def settings_of(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, in the order given (the last axis varies fastest)."""
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def config_for(base: RunConfig, setting: dict[str, Any], seed: int) -> RunConfig:
    """``base`` with ``setting`` applied and ``seed``: a run option (``epochs`` sets both stages') replaces
    the base's, any other key joins the distiller's options. Where the grid varies ``augment`` and not
    ``teacher_outputs``, the teacher runs online exactly when faces are augmented, as ``run`` decides; so
    for ``mix``.
    A value of the wrong type, or one the run or its distiller refuses, raises a one-line ``UsageError``."""
    from ..config import default_teacher_outputs

    setting = dict(setting)
    if "epochs" in setting:
        epochs = setting.pop("epochs")
        setting.update(teacher_epochs=epochs, student_epochs=epochs)
    defaults = RunConfig().to_dict()
    run_options = {k: _checked(k, v, defaults[k]) for k, v in setting.items() if k in _FIELDS}
    distiller_args = {**base.distiller_args, **{k: v for k, v in setting.items() if k not in _FIELDS}}
    values = {**base.to_dict(), **run_options, "distiller_args": distiller_args, "seed": seed}
    if ("augment" in run_options or "mix" in run_options) and "teacher_outputs" not in run_options:
        values["teacher_outputs"] = default_teacher_outputs(values["augment"], values["mix"])
    return RunConfig.from_dict(values)


def _checked(key: str, value: Any, default: Any) -> Any:
    """``value`` for run option ``key`` if it has the type of the option's default (an integral number for
    a whole number; anything for an option whose default is None or a mapping, which the run checks)."""
    number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if isinstance(default, bool):
        ok, kind = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, kind = number and float(value).is_integer(), "whole number"
    elif isinstance(default, float):
        ok, kind = number, "number"
    elif isinstance(default, str):
        ok, kind = isinstance(value, str), "name"
    else:
        ok, kind = True, ""
    if not ok:
        raise UsageError(f"--grid {key}: {value!r} is not a {kind}")
    return int(value) if kind == "whole number" else value


def label(setting: dict[str, Any]) -> str:
    return ", ".join(f"{k.rstrip('_')}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in setting.items())


def _best_val(history: list[dict[str, Any]], task: Any) -> float:
    best = None
    for record in history:
        score = record.get(f"val_{task.metric}")
        if score is not None and better_score(task, score, best):
            best = score
    return math.nan if best is None else float(best)


def run_sweep(base: RunConfig, grid: dict[str, list[Any]], seeds: list[int], out: Path, reporter: Any, cache: Any,
              command: str | None = None) -> dict[str, Any]:
    """Train every setting x seed not yet in ``out/sweep.jsonl``, rank the settings by their mean best
    occluded validation score, score the chosen one on the test faces; returns what ``chosen.json`` holds.

    Every config is built (and refused, with one line) before anything trains. A Ctrl-C, wherever it
    comes, is an ``Interrupted`` that says what was kept and how to continue.
    """
    out = Path(out)
    try:
        return _run_sweep(base, grid, seeds, out, reporter, cache, command)
    except (KeyboardInterrupt, Interrupted) as exc:
        trained = len(read_jsonl(out / LINES))
        kept = f"trained settings are kept in {out / LINES} ({trained} so far)" if trained else \
            "no setting had finished training"
        raise Interrupted.saying(exc, f"{kept}; the one in training continues from its last checkpoint, if one "
                                      "was saved: rerun the same command") from exc


def _run_sweep(base: RunConfig, grid: dict[str, list[Any]], seeds: list[int], out: Path, reporter: Any, cache: Any,
               command: str | None) -> dict[str, Any]:
    if getattr(cache, "root", None) is None:
        raise UsageError("a sweep needs the run cache (it scores the chosen setting from the stored models); "
                         "drop --no-cache")
    settings = settings_of(grid)
    configs = {(i, seed): config_for(base, setting, seed) for i, setting in enumerate(settings) for seed in seeds}
    for cfg in {config_digest(c): c for c in configs.values()}.values():
        ProtocolRun(cfg).preflight()  # plugins and their options, data, backbone: before any training
    out.mkdir(parents=True, exist_ok=True)
    lines = [r for r in read_jsonl(out / LINES) if isinstance(r, dict) and "config_digest" in r]
    done = {row["config_digest"]: row for row in lines}
    todo = [(i, seed) for (i, seed), cfg in configs.items() if config_digest(cfg) not in done]
    reporter.info(f"sweep: {len(settings)} settings x {len(seeds)} seeds; {len(configs) - len(todo)} already in "
                  f"{out / LINES}, {len(todo)} to train")
    with reporter.suite(len(configs), len(configs) - len(todo)) as bar:
        for i, seed in todo:
            cfg = configs[(i, seed)]
            digest = config_digest(cfg)
            bar.note(f"{label(settings[i])} seed {seed}")
            checkpoints = out / RESUME / digest
            run = ProtocolRun(cfg, reporter, cache, checkpoint_dir=checkpoints, discard_stale=True)
            task = run.preflight().task
            try:
                run.student()
                history, failed = run.histories["student"], None
            except TrainingDiverged as exc:  # a setting that diverges ranks last; the sweep goes on
                history, failed = [], str(exc)
                reporter.info(f"{label(settings[i])} seed {seed}: {exc}")
            lines.append({"setting": settings[i], "label": label(settings[i]), "seed": seed,
                          "metric": task.metric, "higher_is_better": task.higher_is_better,
                          "val_occluded": _best_val(history, task), "history": history, "failed": failed,
                          "config": cfg.to_dict(), "config_digest": digest})
            write_text(out / LINES, "".join(json.dumps(r, sort_keys=True) + "\n" for r in lines))
            shutil.rmtree(checkpoints, ignore_errors=True)
            bar.advance(1)
    if (out / RESUME).is_dir() and not any((out / RESUME).iterdir()):
        (out / RESUME).rmdir()
    by_digest = {row["config_digest"]: row for row in lines}
    ranking = []
    for i, setting in enumerate(settings):
        scores = [by_digest[config_digest(configs[(i, seed)])]["val_occluded"] for seed in seeds]
        ranking.append({"setting": setting, "label": label(setting), "val_occluded": scores,
                        "val_occluded_mean": statistics.fmean(scores)})
    first = by_digest[config_digest(configs[(0, seeds[0])])]
    higher = first["higher_is_better"]
    finite = [r for r in ranking if math.isfinite(r["val_occluded_mean"])]
    if not finite:
        raise UsageError("no setting reached a finite validation score; nothing to choose")
    finite.sort(key=lambda r: -r["val_occluded_mean"] if higher else r["val_occluded_mean"])
    chosen = finite[0]
    index = settings.index(chosen["setting"])
    test = {}
    reporter.info(f"chosen on validation: {chosen['label']}; scoring it on the test faces")
    for seed in seeds:
        run = ProtocolRun(configs[(index, seed)], reporter, cache)
        metrics = run.score()
        test[str(seed)] = {k: metrics[k] for k in ("teacher_clean", "teacher_occluded", "baseline", "student",
                                                   "gap_closed")}
    result = {"command": command, "metric": first["metric"], "higher_is_better": higher, "seeds": seeds,
              "grid": grid, "ranking": finite + [r for r in ranking if r not in finite],
              "chosen": chosen, "test": test, "base_config": base.to_dict()}
    write_json(out / CHOSEN, result)
    write_text(out / "summary.md", summary(result))
    return result


def summary(result: dict[str, Any]) -> str:
    """``summary.md``: the ranking on validation, then the chosen setting's test figures."""
    metric, seeds = result["metric"], result["seeds"]
    lines = ["# Sweep", ""]
    if result.get("command"):
        lines += [f"Made by `{result['command']}`.", ""]
    lines += [f"Each setting trained a student per seed ({', '.join(map(str, seeds))}), and is ranked by its best "
              f"{metric} on the occluded validation faces, averaged over the seeds. Test faces were scored for "
              "the chosen setting only.", "",
              f"| rank | setting | validation {metric}, mean | per seed |", "|---:|---|---:|---|"]
    for rank, r in enumerate(result["ranking"], 1):
        lines.append(f"| {rank} | {r['label']} | {r['val_occluded_mean']:.2f} | "
                     + ", ".join(f"{v:.2f}" for v in r["val_occluded"]) + " |")
    lines += ["", f"## Chosen: {result['chosen']['label']}", "", f"Test {metric} of the chosen setting:", "",
              "| seed | teacher, clean | teacher, occluded | finetune | student | gap closed |",
              "|---:|---:|---:|---:|---:|---:|"]
    for seed, t in result["test"].items():
        gap = "–" if t["gap_closed"] is None else f"{100 * t['gap_closed']:.1f}%"
        lines.append(f"| {seed} | {t['teacher_clean']:.2f} | {t['teacher_occluded']:.2f} | {t['baseline']:.2f} | "
                     f"{t['student']:.2f} | {gap} |")
    return "\n".join(lines) + "\n"
