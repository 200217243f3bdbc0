"""A suite directory's format and data model: what ``bench run`` writes and ``bench report`` reads.

``OUT/`` holds:

- ``results.jsonl`` (``RESULTS``): one JSON object per line, one line per finished (cell, seed); each
  line carries at least ``cell`` (``dataset/task/occlusion/label``), ``seed`` and ``config_digest``
  (``config_digest``: a finished run is recognised by it), plus the run's ``metrics.json`` fields;
- ``suite.json`` (``SUITE_META``): the suite's name, file, description, seeds, preset, references, the
  command that made the directory and the cell ids;
- ``.resume/`` (``RESUME``): the stage checkpoints of runs not finished yet, one folder per run;
- ``.results.lock`` (``LOCK``): the lock held while a line is added (``add_result``);
- ``summary.md``, ``summary.csv`` and ``plots/``: made from the two files above (``bench.summary``).

``collect`` turns the lines into ``CellStats``, one per cell over its seeds, each paired with the
``finetune`` cell of its (data set, task, occlusion).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..io import unpack_per_face, write_json, write_text
from ..distillers.base import split_replica
from .stats import mean_std, paired_t, per_face_test

RESULTS = "results.jsonl"
SUITE_META = "suite.json"
RESUME = ".resume"  # OUT/.resume/<run>/: the stage checkpoints of runs not finished yet
LOCK = ".results.lock"  # held while a run's line is added, by pieces of a suite running at once
# made from RESULTS and SUITE_META; ``clear`` removes them with the rest
SUMMARY_FILES = ("summary.md", "summary.csv")
PLOTS = "plots"
ALPHA = 0.05  # significance level of the paired t-test against finetune
DATASET_NAMES = {"ferplus": "FER+", "fer2013": "FER2013", "utkface": "UTKFace", "affectnet": "AffectNet",
                 "synthfaces": "built-in faces"}


def config_digest(cfg: RunConfig) -> str:
    """Identifies a finished run in results.jsonl. Fields at their defaults are left out, so that a run
    option added in a later version (with a default that changes nothing) does not redo finished cells."""
    defaults = RunConfig().to_dict()
    changed = {k: v for k, v in cfg.to_dict().items() if k not in defaults or defaults[k] != v}
    return hashlib.sha256(json.dumps(changed, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_jsonl(path: Path) -> list[Any]:
    """The JSON values of a JSON-lines file (none when it is missing); a line cut short by a kill is
    ignored (the file is rewritten whole)."""
    path = Path(path)
    if not path.is_file():
        return []
    values = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            values.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return values


def read_results(out: Path) -> list[dict[str, Any]]:
    """The lines of ``out/results.jsonl`` that hold a cell and a seed (``read_jsonl``)."""
    return [r for r in read_jsonl(Path(out) / RESULTS) if isinstance(r, dict) and "cell" in r and "seed" in r]


def write_results(out: Path, rows: list[dict[str, Any]]) -> None:
    """Replace ``out/results.jsonl`` with ``rows``, one sorted-key JSON object per line.

    The whole file is replaced atomically: a kill leaves the old lines or the new ones, never half a line.
    """
    write_text(Path(out) / RESULTS, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def add_result(out: Path, row: dict[str, Any]) -> list[dict[str, Any]]:
    """Put ``row`` into ``out/results.jsonl`` in place of any line of the same cell and seed; returns the lines.

    The lines are read again under a lock on ``out`` (``filelock``, which torch already needs), so pieces of
    one suite run at once into one ``out`` (``--only`` and ``--seed``) each add their own lines, not write
    back the ones they read when they started over the others'.
    """
    from filelock import FileLock

    out = Path(out)
    with FileLock(str(out / LOCK)):
        rows = [r for r in read_results(out) if (r["cell"], r["seed"]) != (row["cell"], row["seed"])] + [row]
        write_results(out, rows)
    return rows


def baseline_cell(group: list["CellStats"]) -> "CellStats":
    """The ``finetune`` cell of one (data set, task, occlusion)'s cells, or the first where none ran yet:
    the teacher's scores and the row's seeds are read from it."""
    return next((c for c in group if c.distiller == "finetune"), group[0])


def read_meta(out: Path) -> dict[str, Any]:
    """``out/suite.json``, or ``{}`` when there is none (a directory of results alone)."""
    path = Path(out) / SUITE_META
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def write_meta(out: Path, suite: Any, command: str | None) -> None:
    """What ``bench report`` needs besides the results: the suite's (a ``bench.suite.Suite``) name, file,
    text, seeds, preset, references and cells, and the command that made the directory."""
    write_json(Path(out) / SUITE_META, {
        "name": suite.name, "file": suite.path.as_posix(), "description": suite.description,
        "seeds": suite.seeds, "preset": suite.preset, "references": suite.references, "command": command,
        "cells": [c.id for c in suite.cells]})


def clear(out: Path) -> None:
    """Remove everything a suite wrote into ``out`` (results, metadata, summaries, plots, unfinished
    runs); other files stay."""
    out = Path(out)
    for name in (RESULTS, SUITE_META, *SUMMARY_FILES):  # not LOCK: another piece may hold it
        (out / name).unlink(missing_ok=True)
    for name in (PLOTS, RESUME):
        shutil.rmtree(out / name, ignore_errors=True)


@dataclass
class CellStats:
    """One cell over its seeds."""

    dataset: str
    task: str
    occlusion: str
    label: str
    distiller: str
    metric: str
    unit: str
    higher_is_better: bool
    rows: dict[int, dict[str, Any]] = field(default_factory=dict)  # seed -> results line
    vs_finetune: dict[str, Any] | None = None
    # seed -> stats.per_face_test against that seed's finetune, for seeds whose lines hold per-face outcomes
    per_face: dict[int, dict[str, Any]] = field(default_factory=dict)
    # a combined cell against the group's ensemble control: {"control": label, **paired_t, "seeds", "per_face"}
    vs_control: dict[str, Any] | None = None

    @property
    def distiller_args(self) -> dict[str, Any]:
        """The distiller's options as its first line's config gives them ({} without lines)."""
        if not self.rows:
            return {}
        return (next(iter(self.rows.values())).get("config") or {}).get("distiller_args") or {}

    @property
    def is_ensemble_control(self) -> bool:
        """``combined`` over ``finetune`` students only (``members=finetune,finetune:1``)."""
        if self.distiller != "combined":
            return False
        members = self.distiller_args.get("members")
        names = members.split(",") if isinstance(members, str) else list(members or [])
        return bool(names) and all(split_replica(str(m).strip())[0] == "finetune" for m in names)

    @property
    def id(self) -> str:
        """The suite's id of the cell (``dataset/task/occlusion/label``), as its lines name it."""
        return next(iter(self.rows.values()))["cell"]

    @property
    def group(self) -> tuple[str, str, str]:
        return self.dataset, self.task, self.occlusion

    @property
    def seeds(self) -> list[int]:
        return sorted(self.rows)

    def values(self, name: str) -> list[float]:
        """``name`` (a score of results.jsonl, or ``gap_closed`` in percent) of each seed that has it."""
        scale = 100.0 if name == "gap_closed" else 1.0
        return [self.rows[s][name] * scale for s in self.seeds if self.rows[s].get(name) is not None]

    def stat(self, name: str) -> tuple[float, float]:
        return mean_std(self.values(name))

    @property
    def significant(self) -> bool:
        p = (self.vs_finetune or {}).get("p")
        return p is not None and p < ALPHA

    @property
    def better(self) -> bool:
        diff = (self.vs_finetune or {}).get("mean") or 0.0
        return diff > 0 if self.higher_is_better else diff < 0


def collect(rows: list[dict[str, Any]]) -> list[CellStats]:
    """Cells in the order they first appear; the last line of a (cell, seed) counts."""
    cells: dict[str, CellStats] = {}
    for r in rows:
        c = cells.get(r["cell"])
        if c is None:
            c = cells[r["cell"]] = CellStats(r["dataset"], r["task"], r["occlusion"], r.get("label") or r["distiller"],
                                             r["distiller"], r["metric"], r.get("unit") or "", bool(r["higher_is_better"]))
        c.rows[int(r["seed"])] = r
    out = list(cells.values())
    for c in out:
        base = next((b for b in out if b.group == c.group and b.distiller == "finetune"), None)
        if base is None:
            continue
        c.vs_finetune, c.per_face = _paired(c, base)
        if c.distiller == "finetune":
            c.per_face = {}
    for control in [c for c in out if c.is_ensemble_control]:
        combine = control.distiller_args.get("combine", "head")  # a head against a head, an average against one
        for c in out:
            if c.group == control.group and c.distiller == "combined" and not c.is_ensemble_control \
                    and c.distiller_args.get("combine", "head") == combine:
                stats, per_face = _paired(c, control)
                c.vs_control = {"control": control.label, **stats, "per_face": per_face}
    return out


def _paired(c: CellStats, other: CellStats) -> tuple[dict[str, Any], dict[int, dict[str, Any]]]:
    """``c``'s student against ``other``'s on the seeds both have: the paired t-test over seeds, and the
    per-face test of each seed whose lines hold per-face outcomes."""
    seeds = [s for s in c.seeds if s in other.rows]
    stats = {**paired_t([c.rows[s]["student"] - other.rows[s]["student"] for s in seeds]), "seeds": seeds}
    per_face = {}
    for s in seeds:
        mine, theirs = (c.rows[s].get("per_face") or {}).get("student"), \
            (other.rows[s].get("per_face") or {}).get("student")
        if mine and theirs and mine["kind"] == theirs["kind"] and mine["n"] == theirs["n"]:
            per_face[s] = per_face_test(mine["kind"], unpack_per_face(mine), unpack_per_face(theirs))
    return stats, per_face


def metric_label(c: CellStats) -> str:
    """The cell's metric as a heading reads it: ``accuracy (%), higher is better``."""
    return f"{c.metric}" + (f" ({c.unit})" if c.unit else "") + (", higher is better" if c.higher_is_better
                                                                  else ", lower is better")
