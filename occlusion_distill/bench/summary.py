"""A suite's results, from ``results.jsonl`` alone: summary.md, summary.csv and plots.

``occdistill bench report DIR`` calls ``write_report`` on a finished (or half-finished) suite directory;
``bench run`` calls it after the last cell.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..io import atomic_write, write_text
from .plots import bar_chart, gap_heatmap
from .results import (ALPHA, DATASET_NAMES, PLOTS, RESULTS, CellStats, baseline_cell, collect, metric_label,
                      read_meta, read_results)

SCORES = ("teacher_clean", "teacher_occluded", "baseline", "student")


def _seeds_text(seeds: list[int]) -> str:
    return ("seed " if len(seeds) == 1 else "seeds ") + ", ".join(map(str, seeds))


def _fmt(c: CellStats | None, name: str, row_seeds: list[int], digits: int = 2, unit: str = "") -> str:
    """``c``'s mean ± std of ``name`` over its seeds; "–" without ``c`` or a value.

    One seed has no spread, so it shows the value alone, not "± 0". A cell whose seeds are not its row's
    (``row_seeds``, its baseline's) says which it has: its mean is over other seeds' models than its
    neighbours', so the two side by side are not a paired comparison (Δ and the tests are paired)."""
    m, s = c.stat(name) if c is not None else (math.nan, math.nan)
    if c is None or math.isnan(m):
        return "–"
    text = f"{m:.{digits}f}{unit}" if len(c.seeds) == 1 else f"{m:.{digits}f}{unit} ± {s:.{digits}f}"
    return text if c.seeds == row_seeds else f"{text} ({_seeds_text(c.seeds)})"


def _row_head(occ: str, row_seeds: list[int], all_seeds: list[int]) -> str:
    """A row's occlusion, with its seeds where they are not all the suite's."""
    return occ if row_seeds == all_seeds else f"{occ} ({_seeds_text(row_seeds)})"


def _gap_text(c: CellStats | None, row_seeds: list[int]) -> str:
    return _fmt(c, "gap_closed", row_seeds, digits=1, unit="%")


def _labels(by_occ: dict[str, list[CellStats]], distilled: bool = False) -> list[str]:
    """Every label of a (data set, task) group (with ``distilled``, but ``finetune``'s), in suite order: an
    occlusion that lacks one (a piece of a suite run so far) gets "–" in its column instead of shifting
    the later columns under the wrong headers."""
    return list(dict.fromkeys(c.label for group in by_occ.values() for c in group
                              if not (distilled and c.distiller == "finetune")))


def _cell(group: list[CellStats], label: str) -> CellStats | None:
    return next((c for c in group if c.label == label), None)


def _diff_text(c: CellStats) -> str:
    v = c.vs_finetune
    if not v or c.distiller == "finetune":
        return ""
    p = "" if v["p"] is None else f", p = {v['p']:.3f}"
    mark = (" **▲**" if c.better else " **▼**") if c.significant else ""
    return f"{v['mean']:+.2f}{p}{mark}"


def _groups(cells: list[CellStats]) -> dict[tuple[str, str], dict[str, list[CellStats]]]:
    """(data set, task) -> occlusion -> cells, in suite order."""
    out: dict[tuple[str, str], dict[str, list[CellStats]]] = {}
    for c in cells:
        out.setdefault((c.dataset, c.task), {}).setdefault(c.occlusion, []).append(c)
    return out


def _setup_line(rows: list[dict[str, Any]], dataset: str, task: str) -> str:
    cfg = next(r["config"] for r in rows if r["dataset"] == dataset and r["task"] == task)
    n_train = next(r.get("n_train") for r in rows if r["dataset"] == dataset and r["task"] == task)
    n_test = next(r.get("n_test") for r in rows if r["dataset"] == dataset and r["task"] == task)
    start = "pretrained" if cfg.get("pretrained") else ("--weights" if cfg.get("weights") else "from scratch")
    return (f"`{cfg['backbone']}` ({start}), {cfg['image_size']} px, teacher {cfg['teacher_epochs']} epochs, students {cfg['student_epochs']} epochs, batch "
            f"{cfg['batch_size']}; {n_train:,} training and {n_test:,} test faces")


def _outside_text(rows: list[dict[str, Any]]) -> str:
    """What the wall time leaves out: models that no run of these trained, but found stored (trained by
    ``benchmarks/suite_stages.py``, another suite sharing the cache, or a run before an interruption).

    A teacher is shared by a (data set, task, seed) and a baseline (``finetune``'s student) by an
    occlusion too: each counts once, when every run that needs it found it stored. A distilled student
    belongs to its run alone."""
    def reused(r: dict[str, Any], stage: str) -> bool:
        return bool((r.get("reused_from_cache") or {}).get(stage))

    shared: dict[tuple[Any, ...], bool] = {}
    for r in rows:
        for stage, key in (("teacher", (r.get("dataset"), r.get("task"), r.get("seed"))),
                           ("baseline", (r.get("dataset"), r.get("task"), r.get("occlusion"), r.get("seed")))):
            here = reused(r, "student" if stage == "baseline" and r.get("distiller") == "finetune" else stage)
            shared[(stage, *key)] = shared.get((stage, *key), True) and here
    counts = {stage: sum(v for (s, *_), v in shared.items() if s == stage) for stage in ("teacher", "baseline")}
    counts["distilled student"] = sum(reused(r, "student") for r in rows if r.get("distiller") != "finetune")
    parts = [f"{n} {name}{'s' if n != 1 else ''}" for name, n in counts.items() if n]
    if not parts:
        return ""
    return (f" The wall time leaves out the training of {', '.join(parts)} that these runs found stored, "
            "trained by another process sharing the run cache (`benchmarks/suite_stages.py`, say) or before "
            "an interruption.")


def markdown(cells: list[CellStats], rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    seeds = sorted({s for c in cells for s in c.seeds})
    devices = sorted({r.get("device_name") or r.get("device", "?") for r in rows})
    commits = sorted({r.get("git_commit") or "unknown" for r in rows})
    hours = sum(r.get("wall_seconds", 0.0) for r in rows) / 3600
    lines = [f"# Benchmark suite `{meta.get('name', '?')}`", ""]
    if meta.get("description"):
        lines += [meta["description"], ""]
    if meta.get("command"):
        lines += [f"Made by `{meta['command']}`; rebuilt from `{RESULTS}` by `occdistill bench report DIR`.", ""]
    lines += [f"{len(rows)} runs ({len(cells)} cells, seeds {', '.join(map(str, seeds))}) in {hours:.1f} h of wall "
              f"time on {'; '.join(devices)}; occlusion-distill commit(s) {', '.join(c[:12] for c in commits)}."
              + _outside_text(rows),
              "", "Every score is on the test faces, mean ± std over seeds. Each seed has its own teacher and "
              "baseline (the teacher fine-tuned on occluded faces, `finetune`), shared by that seed's "
              "distillers. **Gap closed** = (student − finetune) / (teacher on clean faces − finetune), per seed "
              "then averaged. **Δ** = the distiller's student minus `finetune`, paired by seed, with a paired "
              f"t-test; ▲ / ▼ mark p < {ALPHA} (better / worse than `finetune`).", ""]
    for (dataset, task), by_occ in _groups(cells).items():
        first = next(iter(by_occ.values()))[0]
        labels = _labels(by_occ)
        lines += [f"## {DATASET_NAMES.get(dataset, dataset)} · {task}: {metric_label(first)}", "",
                  _setup_line(rows, dataset, task) + ".", "",
                  "| occlusion | teacher, clean faces | teacher, occluded | " + " | ".join(labels) + " |",
                  "|---|" + "---:|" * (2 + len(labels))]
        for occ, group in by_occ.items():
            ref = baseline_cell(group)
            students = []
            for label in labels:
                c = _cell(group, label)
                text = _fmt(c, "student", ref.seeds)
                if c is not None and c.significant:
                    text += " ▲" if c.better else " ▼"
                students.append(text)
            lines.append(f"| {_row_head(occ, ref.seeds, seeds)} | {_fmt(ref, 'teacher_clean', ref.seeds)} | "
                         f"{_fmt(ref, 'teacher_occluded', ref.seeds)} | " + " | ".join(students) + " |")
        distilled = _labels(by_occ, distilled=True)
        if distilled:
            lines += ["", "Gap closed, and Δ against `finetune` (paired by seed):", "",
                      "| occlusion | " + " | ".join(distilled) + " |",
                      "|---|" + "---:|" * len(distilled)]
            for occ, group in by_occ.items():
                ref = baseline_cell(group)
                cols = []
                for label in distilled:
                    c = _cell(group, label)
                    if c is None:
                        cols.append("–")
                        continue
                    gap, diff = _gap_text(c, ref.seeds), _diff_text(c)
                    if diff:  # "4.9% (seed 2)" → "4.9% (seed 2; Δ +0.35)"; no Δ without a finetune cell
                        gap = f"{gap[:-1]}; Δ {diff})" if gap.endswith(")") else f"{gap} (Δ {diff})"
                    cols.append(gap)
                lines.append(f"| {_row_head(occ, ref.seeds, seeds)} | " + " | ".join(cols) + " |")
        lines += per_face_section(by_occ)
        lines += control_section(by_occ)
        lines += ["", f"![{dataset} {task}](plots/{dataset}-{task}.png)", ""]
    lines += ["## Gap closed at a glance", "", "![gap closed](plots/gap-closed.png)", ""]
    lines += reference_section(cells, meta.get("references") or [])
    short = [c for c in cells if len(c.seeds) < len(seeds)]
    if short:
        lines += ["## Incomplete cells", "", "These cells have fewer seeds than the others (the suite is still "
                  "running or was filtered with --only): " + ", ".join(f"`{c.dataset}/{c.task}/{c.occlusion}/"
                                                                       f"{c.label}` ({len(c.seeds)})" for c in short), ""]
    return "\n".join(lines)


def _per_face_text(per_face: dict[int, dict[str, Any]]) -> str:
    """Per-seed per-face tests (``CellStats.per_face``) as a table cell."""
    return "; ".join(f"seed {seed}: p = {r['p']:.3g} (+{r['better']} / −{r['worse']})" if r["p"] is not None
                     else f"seed {seed}: no face differs" for seed, r in sorted(per_face.items())) or "–"


def per_face_section(by_occ: dict[str, list[CellStats]]) -> list[str]:
    """The per-seed paired tests on the same test faces, where the results lines hold per-face outcomes."""
    cells = [c for group in by_occ.values() for c in group if c.per_face]
    if not cells:
        return []
    test = next(iter(cells[0].per_face.values()))["test"]
    what = ("McNemar's exact test on the faces each gets right" if test == "McNemar"
            else "the Wilcoxon signed-rank test on absolute errors")
    labels = _labels(by_occ, distilled=True)
    lines = ["", f"Against `finetune` on the same test faces, seed by seed ({what}; two-sided): p, and the faces "
             "where the student does better / worse:", "",
             "| occlusion | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for occ, group in by_occ.items():
        in_row = [_cell(group, label) for label in labels]
        texts = ["–" if c is None else _per_face_text(c.per_face) for c in in_row]
        lines.append(f"| {occ} | " + " | ".join(texts) + " |")
    return lines


def control_section(by_occ: dict[str, list[CellStats]]) -> list[str]:
    """Each ``combined`` cell against its group's ensemble control (the same head on two ``finetune``
    students): how much of its gain is distillation rather than having two models."""
    cells = [c for group in by_occ.values() for c in group if c.vs_control]
    if not cells:
        return []
    sign = "" if cells[0].higher_is_better else " (negative is better)"
    lines = ["", "Against the ensemble control (the same head on two `finetune` students of the same teacher), "
             f"paired by seed{sign}, and on the same test faces seed by seed:", "",
             "| occlusion | student | control | Δ (paired t-test) | same faces |", "|---|---|---|---:|---|"]
    for c in cells:
        v = c.vs_control
        p = "" if v["p"] is None else f", p = {v['p']:.3f}"
        lines.append(f"| {c.occlusion} | {c.label} | {v['control']} | {v['mean']:+.2f}{p} | "
                     f"{_per_face_text(v['per_face'])} |")
    return lines


def reference_section(cells: list[CellStats], references: list[dict[str, Any]]) -> list[str]:
    """Published figures beside the matching cells (the suite file's ``references``)."""
    lines: list[str] = []
    for ref in references:
        group = [c for c in cells if c.group == (ref["dataset"], ref["task"], ref["occlusion"])]
        if not group:
            continue
        base = baseline_cell(group)
        paper = ref["values"]
        t_ref = paper.get("teacher_clean")
        b_ref = paper.get("finetune")
        lines += [f"## Beside the paper: {DATASET_NAMES.get(ref['dataset'], ref['dataset'])} · {ref['task']}, "
                  f"`{ref['occlusion']}`", "",
                  f"Paper: {ref['source']}" + (f" ({ref['setting']})" if ref.get("setting") else "") + ".", "",
                  f"| model | paper | gap closed (paper) | ours, mean ± std ({_seeds_text(base.seeds)}) | "
                  "gap closed (ours) |",
                  "|---|---:|---:|---:|---:|"]
        ours = {"teacher_clean": _fmt(base, "teacher_clean", base.seeds),
                "teacher_occluded": _fmt(base, "teacher_occluded", base.seeds),
                **{c.label: _fmt(c, "student", base.seeds) for c in group}}
        gaps = {c.label: _gap_text(c, base.seeds) for c in group if c.distiller != "finetune"}
        names = {"teacher_clean": "teacher, clean faces", "teacher_occluded": "teacher, occluded faces"}
        for key in dict.fromkeys([*paper, *ours]):
            p = paper.get(key)
            p_gap = ""
            if p is not None and t_ref is not None and b_ref is not None and key not in names and key != "finetune":
                p_gap = f"{100 * (p - b_ref) / (t_ref - b_ref):.1f}%"
            o = ours.get(key)
            lines.append(f"| {names.get(key, key)} | {'–' if p is None else f'{p:.2f}'} | {p_gap} | "
                         f"{'–' if o is None else o} | {gaps.get(key, '')} |")
        if ref.get("note"):
            lines += ["", str(ref["note"]).strip()]
        lines.append("")
    return lines


CSV_FIELDS = ["dataset", "task", "occlusion", "distiller", "label", "metric", "unit", "higher_is_better", "n_seeds",
              "seeds", *[f"{s}_{x}" for s in (*SCORES, "gap_closed_pct") for x in ("mean", "std")],
              "diff_vs_finetune_mean", "diff_vs_finetune_std", "t", "p", "significant", "per_face_test",
              "per_face_p"]


def csv_text(cells: list[CellStats]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for c in cells:
        row: dict[str, Any] = {"dataset": c.dataset, "task": c.task, "occlusion": c.occlusion,
                               "distiller": c.distiller, "label": c.label, "metric": c.metric, "unit": c.unit,
                               "higher_is_better": c.higher_is_better, "n_seeds": len(c.seeds),
                               "seeds": " ".join(map(str, c.seeds))}
        for s in (*SCORES, "gap_closed"):
            m, sd = c.stat(s)
            name = "gap_closed_pct" if s == "gap_closed" else s
            row[f"{name}_mean"] = "" if math.isnan(m) else round(m, 4)
            row[f"{name}_std"] = "" if math.isnan(sd) else round(sd, 4)
        v = c.vs_finetune or {}
        if c.distiller != "finetune" and v:
            row.update(diff_vs_finetune_mean=round(v["mean"], 4), diff_vs_finetune_std=round(v["std"], 4),
                       t="" if v["t"] is None else round(v["t"], 4), p="" if v["p"] is None else round(v["p"], 5),
                       significant=c.significant)
        if c.per_face:  # seed:p pairs, space-separated
            row["per_face_test"] = next(iter(c.per_face.values()))["test"]
            row["per_face_p"] = " ".join(f"{seed}:" + ("" if r["p"] is None else f"{r['p']:.5g}")
                                         for seed, r in sorted(c.per_face.items()))
        writer.writerow(row)
    return buf.getvalue()


def write_report(out: Path, suite: Any = None) -> dict[str, Any]:
    """summary.md, summary.csv and plots/ from ``out/results.jsonl`` (and ``out/suite.json`` when present);
    raises ``UsageError`` when there are no results."""
    out = Path(out)
    rows = read_results(out)
    if not rows:
        raise UsageError(f"{out / RESULTS} holds no results: run `occdistill bench run --suite NAME --out {out}` first")
    meta = read_meta(out)
    cells = collect(rows)
    # the suite's order, not the order runs finished in (pieces of a suite may run at once)
    order = {cell_id: i for i, cell_id in enumerate(meta.get("cells") or [])}
    cells.sort(key=lambda c: order.get(c.id, len(order)))
    # plots first: the markdown links to them
    plot_dir = out / PLOTS
    for (dataset, task), by_occ in _groups(cells).items():
        atomic_write(plot_dir / f"{dataset}-{task}.png",
                     lambda tmp, d=dataset, t=task, g=by_occ: bar_chart(tmp, d, t, g))
    atomic_write(plot_dir / "gap-closed.png", lambda tmp: gap_heatmap(tmp, cells))
    write_text(out / "summary.csv", csv_text(cells))
    write_text(out / "summary.md", markdown(cells, rows, meta) + "\n")
    return {"cells": len(cells), "runs": len(rows), "significant": sum(c.significant for c in cells)}
