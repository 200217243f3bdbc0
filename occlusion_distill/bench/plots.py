"""The suite's figures: per task, scores with error bars; for the whole suite, a heatmap of the gap closed.

Figures are built without pyplot (no global backend, no GUI), as in ``protocol.artifacts``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

from .results import DATASET_NAMES, CellStats, baseline_cell, metric_label

# teacher in blues, the baseline in orange, distillers in greens and purples: same colours in every plot
COLOURS = {"teacher_clean": "#2f5d9b", "teacher_occluded": "#9db4d6", "finetune": "#dd8452"}
DISTILLER_COLOURS = ["#55a868", "#8172b3", "#c44e52", "#64b5cd", "#937860", "#da8bc3"]


def bar_chart(path: Path, dataset: str, task: str, by_occlusion: dict[str, list[CellStats]]) -> None:
    occlusions = list(by_occlusion)
    # every label of any occlusion, in suite order: a piece of a suite may have run a label under one only
    distillers = {c.label: c.distiller for group in by_occlusion.values() for c in group}
    series = [("teacher, clean faces", "teacher_clean", None), ("teacher, occluded", "teacher_occluded", None)]
    series += [(label if d != "finetune" else "finetune (baseline)", "student", label)
               for label, d in distillers.items()]
    width = 0.8 / len(series)
    fig = Figure(figsize=(max(6.5, 1.9 * len(occlusions) + 2.5), 4.2), dpi=120)
    ax = fig.subplots()
    bars = []  # (x, mean, std, colour, name, score)
    k = 0
    for i, (name, score, label) in enumerate(series):
        if label is None:
            colour = COLOURS[score]
        elif name.startswith("finetune"):
            colour = COLOURS["finetune"]
        else:
            colour = DISTILLER_COLOURS[k % len(DISTILLER_COLOURS)]
            k += 1
        for j, occ in enumerate(occlusions):
            group = by_occlusion[occ]
            cell = baseline_cell(group) if label is None else next((c for c in group if c.label == label), None)
            m, s = cell.stat(score) if cell is not None else (math.nan, math.nan)
            bars.append((j + (i - (len(series) - 1) / 2) * width, m, s, colour, name, score))
    # The axis fits the teacher on clean faces and the students: the comparisons that matter are a few
    # points apart on a large common base. The teacher on occluded faces is often far off; its bar is
    # cut at the axis and carries its value.
    shown = [(m - s, m + s) for _, m, s, _, _, score in bars if score != "teacher_occluded" and not math.isnan(m)]
    low, high = (min(a for a, _ in shown), max(b for _, b in shown)) if shown else (0.0, 1.0)
    span = max(high - low, 1e-6)
    bottom = max(0.0, low - 0.2 * span)
    top = high + 0.15 * span
    seen: set[str] = set()
    # a bar cut at the bottom would have no height: a short hatched stub marks where it is
    stub = bottom + 0.06 * (top - bottom)
    any_clipped = False
    for x, m, s, colour, name, score in bars:
        clipped = score == "teacher_occluded" and not math.isnan(m) and (m < bottom or m > top)
        any_clipped |= clipped
        value = (stub if m < bottom else top) if clipped else m
        ax.bar(x, value - bottom, width * 0.92, bottom=bottom, yerr=None if clipped else s, capsize=2.5,
               color=colour, label=None if name in seen else name, hatch="//" if clipped else None,
               error_kw={"elinewidth": 1, "ecolor": "#333333"})
        seen.add(name)
        if clipped:
            ax.text(x, (stub + 0.02 * (top - bottom)) if m < bottom else top - 0.04 * (top - bottom),
                    f"{m:.1f}", ha="center", va="bottom" if m < bottom else "top", fontsize=7, rotation=90,
                    bbox={"facecolor": "white", "edgecolor": "none", "pad": 1.0})  # legible over the hatching
    ax.set_ylim(bottom, top)
    ax.set_xticks(range(len(occlusions)), occlusions)
    ax.set_xlabel("occlusion (student and scores on occluded test faces)")
    every = [c for group in by_occlusion.values() for c in group]
    ax.set_ylabel(f"test {metric_label(every[0])}", fontsize=9)
    counts = sorted({len(c.seeds) for c in every})
    seeds = str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    notes = ["axis does not start at 0" if bottom > 0 else "", "hatched: cut at the axis, value written"
             if any_clipped else ""]
    notes = [n for n in notes if n]
    ax.set_title(f"{DATASET_NAMES.get(dataset, dataset)} · {task}: mean ± std over {seeds} seed{'s' * (seeds != '1')}"
                 + (f"\n({'; '.join(notes)})" if notes else ""), fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(fontsize=8, ncol=min(3, len(series)), loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)
    fig.tight_layout()
    fig.savefig(path, format="png")


def gap_heatmap(path: Path, cells: list[CellStats]) -> None:
    """Rows: data set · task · occlusion; columns: distillers; colour: gap closed (%), ▲/▼ significant."""
    distilled = [c for c in cells if c.distiller != "finetune"]
    labels = list(dict.fromkeys(c.label for c in distilled))
    groups = list(dict.fromkeys(c.group for c in distilled))
    fig = Figure(figsize=(2.0 + 1.5 * max(1, len(labels)), 1.2 + 0.48 * max(1, len(groups))), dpi=120)
    ax = fig.subplots()
    if not distilled:
        ax.text(0.5, 0.5, "no distilled cells", ha="center", va="center")
        ax.set_axis_off()
        fig.savefig(path, format="png")
        return
    grid = np.full((len(groups), len(labels)), np.nan)
    text = [["" for _ in labels] for _ in groups]
    for c in distilled:
        i, j = groups.index(c.group), labels.index(c.label)
        m, s = c.stat("gap_closed")
        grid[i, j] = m
        if not math.isnan(m):
            mark = (" ▲" if c.better else " ▼") if c.significant else ""
            # as in summary.md (whole percents showed "-0%"); one seed has no spread to show
            text[i][j] = (f"{m:.1f}% ± {s:.1f}" if len(c.seeds) > 1 else f"{m:.1f}% (1 seed)") + mark
        else:
            text[i][j] = "no gap"
    finite = grid[np.isfinite(grid)]
    bound = max(10.0, float(np.abs(finite).max())) if finite.size else 10.0
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="RdBu", norm=TwoSlopeNorm(0.0, -bound, bound), aspect="auto")
    for i in range(len(groups)):
        for j in range(len(labels)):
            v = grid[i, j]
            dark = not math.isnan(v) and abs(v) > 0.6 * bound
            ax.text(j, i, text[i][j], ha="center", va="center", fontsize=8, color="white" if dark else "black")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(groups)), [f"{DATASET_NAMES.get(d, d)} · {t} · {o}" for d, t, o in groups], fontsize=8)
    ax.xaxis.tick_top()
    cbar = fig.colorbar(image, ax=ax, fraction=0.05, pad=0.02)
    cbar.set_label("gap closed (%)", fontsize=8)
    ax.set_title("gap closed: share of the finetune → clean-teacher gap\n(mean ± std over seeds; ▲ / ▼ paired "
                 "t-test p < 0.05)", fontsize=9, pad=24)
    fig.tight_layout()
    fig.savefig(path, format="png")
