"""What a finished run leaves for people: report.md and plots (metrics.json is written by the caller)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import RunConfig

GAP_UNDEFINED = "undefined (the teacher on clean faces is not better than the baseline)"


def result_rows(metrics: dict[str, Any]) -> list[tuple[str, str, float]]:
    """(model, test faces, score) for the four scores of a run, in the order every report shows them."""
    return [("teacher", "clean", metrics["teacher_clean"]), ("teacher", "occluded", metrics["teacher_occluded"]),
            ("baseline (finetune)", "occluded", metrics["baseline"]),
            (f"student ({metrics['distiller']})", "occluded", metrics["student"])]


def report_markdown(cfg: RunConfig, metrics: dict[str, Any], command: str) -> str:
    m, unit = metrics["metric"], metrics.get("unit") or ""
    better = "higher" if metrics["higher_is_better"] else "lower"
    gap = metrics["gap_closed"]
    rows = result_rows(metrics)
    lines = [
        f"# {cfg.task} under `{cfg.occlusion}`, distiller `{cfg.distiller}`", "",
        f"Made by: `{command}`", "",
        f"Backbone `{cfg.backbone}`, data set `{cfg.dataset}`, {cfg.image_size} px, seed {cfg.seed}, "
        f"device {metrics['device']}. Metric: {m}{' (' + unit + ')' if unit else ''}, {better} is better; "
        f"{metrics['n_test']} test faces.", "",
        f"| model | test faces | {m} |", "|---|---|---:|",
        *[f"| {a} | {b} | {v:.2f} |" for a, b, v in rows], "",
        "**Gap closed** (student − baseline) / (teacher on clean − baseline): "
        + (f"**{100 * gap:.1f}%**" if gap is not None else GAP_UNDEFINED), "",
        "All metrics:", "",
        "| model | " + " | ".join(metrics["all_metrics"]["teacher_clean"]) + " |",
        "|---|" + "---:|" * len(metrics["all_metrics"]["teacher_clean"]),
        *[f"| {name} | " + " | ".join(f"{v:.3f}" for v in vals.values()) + " |"
          for name, vals in metrics["all_metrics"].items()], "",
        "Seconds per stage: " + ", ".join(f"{k} {v:.1f}" for k, v in metrics["seconds"].items())
        + ("; reused from the run cache: " + ", ".join(k for k, v in metrics["reused_from_cache"].items() if v)
           if any(metrics["reused_from_cache"].values()) else ""), "",
        "![results](plots/results.png)", "", "![training curves](plots/training.png)", "",
    ]
    return "\n".join(lines)


def make_plots(plot_dir: Path, metrics: dict[str, Any], histories: dict[str, list[dict[str, Any]]]) -> None:
    # Figures built directly, without pyplot: no global backend switch for library users, no GUI.
    from matplotlib.figure import Figure

    plot_dir.mkdir(parents=True, exist_ok=True)
    m, unit = metrics["metric"], metrics.get("unit") or ""
    label = f"test {m}" + (f" ({unit})" if unit else "")
    names = ["teacher\nclean", "teacher\noccluded", "baseline\n(finetune)", f"student\n({metrics['distiller']})"]
    values = [metrics["teacher_clean"], metrics["teacher_occluded"], metrics["baseline"], metrics["student"]]
    fig = Figure(figsize=(6, 3.6), dpi=110)
    ax = fig.subplots()
    bars = ax.bar(names, values, color=["#4c72b0", "#8fa8d0", "#dd8452", "#55a868"])
    ax.bar_label(bars, fmt="%.2f", fontsize=9)
    ax.set_ylabel(label)
    lo = min(values)
    ax.set_ylim(max(0.0, lo - 0.25 * (max(values) - lo) - 1e-6) if metrics["higher_is_better"] else 0.0,
                max(values) * 1.08)
    gap = metrics["gap_closed"]
    ax.set_title(f"{metrics['task']} under {metrics['occlusion']}"
                 + (f" · gap closed {100 * gap:.1f}%" if gap is not None else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(plot_dir / "results.png")

    fig = Figure(figsize=(9, 3.4), dpi=110)
    axes = fig.subplots(1, 2)
    for stage, hist in histories.items():
        if not hist or (stage == "student" and metrics["distiller"] == "finetune"):
            continue
        epochs = [h["epoch"] for h in hist]
        # the task term alone: comparable across stages, unlike a distiller's total loss
        axes[0].plot(epochs, [h.get("train_task", h.get("train_loss", float("nan"))) for h in hist],
                     marker="o", label=stage)
        axes[1].plot(epochs, [h.get(f"val_{m}", float("nan")) for h in hist], marker="o", label=stage)
    axes[0].set_title("training task loss (teacher on clean, students occluded)", fontsize=9)
    axes[1].set_title(f"validation {m}" + (f" ({unit})" if unit else "") + " · teacher on clean, students occluded",
                      fontsize=9)
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(plot_dir / "training.png")
