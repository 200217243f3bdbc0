"""Distillers side by side over several seeds, on the built-in faces (or any data set), same settings.

    python benchmarks/distillers.py --seeds 0 1 2 --distillers finetune kd triplet combined \
        --out benchmarks/results/distillers

A distiller may carry options, ``NAME:KEY=VALUE,KEY=VALUE`` (e.g. ``triplet:lambda=0.5,margin=0.2``),
to compare settings. Each (seed, distiller) run keeps its config and metrics under OUT/runs/; a run
already done with the same config is not repeated, so an interrupted benchmark continues where it
stopped. OUT/summary.md and OUT/summary.json hold mean ± std over the seeds and each distiller's paired
difference to finetune. Teachers, baselines and students are shared through the run cache (combined
reuses the kd and triplet students), as the protocol intends: one teacher and baseline per seed.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

from occlusion_distill import __version__
from occlusion_distill.bench.stats import mean_std
from occlusion_distill.config import RunConfig, parse_kv
from occlusion_distill.engine.cache import ModelCache
from occlusion_distill.io import default_cache_dir
from occlusion_distill.protocol.pipeline import run
from occlusion_distill.io import write_json, write_text
from occlusion_distill.report import RichReporter

FIELDS = ("teacher_clean", "teacher_occluded", "baseline", "student", "gap_closed")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--distillers", nargs="+", default=["finetune", "kd", "triplet", "combined"])
    ap.add_argument("--task", default="expression")
    ap.add_argument("--occlusion", default="lower-half")
    ap.add_argument("--preset", default="default")
    ap.add_argument("--dataset", default="synthfaces")
    ap.add_argument("--dataset-arg", nargs="*", default=[], help="KEY=VALUE options of the data set")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/distillers"))
    args = ap.parse_args()

    reporter = RichReporter()
    cache = ModelCache(default_cache_dir())
    runs = args.out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict]] = {d: [] for d in args.distillers}
    for seed in args.seeds:
        for spec in args.distillers:
            distiller, _, opts = spec.partition(":")
            distiller_args = parse_kv([o for o in opts.split(",") if o], "distiller") if opts else {}
            tag = spec.replace(":", "-").replace(",", "-").replace("=", "")
            path = runs / f"{args.task}-{args.occlusion}-{tag}-{args.preset}-s{seed}.json"
            cfg = RunConfig.from_options(args.preset, task=args.task, occlusion=args.occlusion, distiller=distiller,
                                         seed=seed, distiller_args=distiller_args, dataset=args.dataset,
                                         dataset_args=parse_kv(args.dataset_arg, "dataset"))
            done = json.loads(path.read_text()) if path.is_file() else None
            if done is None or done.get("config") != json.loads(cfg.to_json()):
                reporter.info(f"seed {seed}, {spec}")
                done = {"config": cfg.to_dict(), "metrics": run(cfg, reporter, cache).metrics}
                write_json(path, done)
            results[spec].append(done["metrics"])

    first = next(iter(results.values()))[0]
    metric, unit = first["metric"], first.get("unit", "")
    command = "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    summary = {"command": command, "task": args.task, "occlusion": args.occlusion, "preset": args.preset,
               "seeds": args.seeds, "metric": metric, "unit": unit,
               "versions": {"occlusion_distill": __version__, "torch": torch.__version__,
                            "python": platform.python_version()},
               "device": first["device"], "cells": {}}
    lines = [f"# `{args.task}` under `{args.occlusion}` on `{args.dataset}`: {', '.join(args.distillers)}, "
             f"{len(args.seeds)} seeds", "",
             f"Made by `{command}` (preset `{args.preset}`, seeds {', '.join(map(str, args.seeds))}, "
             f"device {first['device']}). Test {metric}{' in ' + unit if unit else ''}, mean ± std over seeds; "
             "gap closed = (student − baseline) / (teacher on clean − baseline).", "",
             "| distiller | teacher, clean | teacher, occluded | baseline (finetune) | student | gap closed |",
             "|---|---:|---:|---:|---:|---:|"]
    for distiller, rows in results.items():
        cell = {}
        for f in FIELDS:
            values = [r[f] for r in rows if r[f] is not None]
            scale = 100.0 if f == "gap_closed" else 1.0
            cell[f] = {"mean": mean_std(values)[0] * scale, "std": mean_std(values)[1] * scale,
                       "values": [v * scale for v in values]}
        summary["cells"][distiller] = cell
        fmt = [f"{cell[f]['mean']:.2f} ± {cell[f]['std']:.2f}" for f in FIELDS[:-1]]
        lines.append(f"| {distiller} | " + " | ".join(fmt) + f" | {cell['gap_closed']['mean']:.1f}% ± "
                     f"{cell['gap_closed']['std']:.1f} |")
    if "finetune" in results:
        summary["minus_finetune"] = {}
        lines += ["", "Paired difference to finetune, per seed (the same teacher and baseline):", ""]
        for spec, rows in results.items():
            if spec == "finetune":
                continue
            diffs = [k["student"] - f["student"] for k, f in zip(rows, results["finetune"])]
            m, s = mean_std(diffs)
            summary["minus_finetune"][spec] = {"mean": m, "std": s, "values": diffs}
            lines.append(f"- {spec} − finetune: {', '.join(f'{d:+.2f}' for d in diffs)} (mean {m:+.2f} ± {s:.2f})")
    lines += ["", "Per run:", "", "| seed | distiller | teacher clean | teacher occluded | baseline | student | seconds |",
              "|---:|---|---:|---:|---:|---:|---:|"]
    for distiller, rows in results.items():
        for seed, r in zip(args.seeds, rows):
            lines.append(f"| {seed} | {distiller} | {r['teacher_clean']:.2f} | {r['teacher_occluded']:.2f} | "
                         f"{r['baseline']:.2f} | {r['student']:.2f} | {r['seconds']['total']:.0f} |")
    write_json(args.out / "summary.json", summary)
    write_text(args.out / "summary.md", "\n".join(lines) + "\n")
    reporter.out.print("\n".join(lines))


if __name__ == "__main__":
    main()
