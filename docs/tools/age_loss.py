"""The age-loss comparison of docs/age-loss.md: UTKFace age under `mask`, the `quick` suite's settings.

    python docs/tools/age_loss.py --data prepared/utkface --cache-dir /tmp/cache-ageloss \
        --out age-loss.jsonl old huber=5 l1

Each variant trains a teacher (clean faces) and the `finetune` baseline (occluded faces) with one age
loss and appends one JSON line to --out: the best validation MAE of each stage (the epoch the trainer
keeps) and the test MAEs. A variant already in --out for this seed is skipped, so an interrupted
comparison continues.
Variants: `old` (smooth L1 with a threshold of one standard deviation of the training ages, the loss
before the choice), `l1`, `mse`, `huber=YEARS`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from occlusion_distill.config import RunConfig
from occlusion_distill.engine.cache import ModelCache
from occlusion_distill.protocol.pipeline import run
from occlusion_distill.registry import tasks
from occlusion_distill.report import RichReporter
from occlusion_distill.tasks.age import Age

QUICK = {"backbone": "simple-cnn", "image_size": 40, "teacher_epochs": 6, "student_epochs": 2, "batch_size": 64}


class OldAge(Age):
    """The age loss before the choice: Huber with a threshold of one standardised unit."""

    def settings(self):
        return {"loss": "smooth_l1 beta=1 std"}

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.smooth_l1_loss(outputs.reshape(-1), self.normalise(targets))


def factory(variant: str):
    if variant == "old":
        return OldAge
    loss, _, delta = variant.partition("=")
    return lambda: Age(loss, float(delta)) if delta else Age(loss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="prepared UTKFace (occdistill data prepare utkface)")
    parser.add_argument("--cache-dir", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("variants", nargs="+")
    args = parser.parse_args()
    done = set()
    if args.out.is_file():
        done = {(row["variant"], row["seed"]) for row in map(json.loads, args.out.read_text().splitlines())}
    for variant in args.variants:
        if (variant, args.seed) in done:
            continue
        name = f"age-{variant.replace('=', '')}"
        tasks.add(name, factory(variant), description=f"age, loss {variant}")
        cfg = RunConfig.from_options("default", task=name, occlusion="mask", distiller="finetune",
                                     dataset="utkface", dataset_args={"data": str(Path(args.data).resolve())},
                                     seed=args.seed, **QUICK)
        result = run(cfg, RichReporter(quiet=True), ModelCache(Path(args.cache_dir)))
        m, h = result.metrics, result.histories
        row = {"variant": variant, "seed": args.seed, "task_settings": tasks.create(name).settings(),
               "val_teacher_clean": min(r["val_mae"] for r in h["teacher"]),
               "val_baseline_mask": min(r["val_mae"] for r in h["baseline"]),
               **{f"test_{k}": m[k] for k in ("teacher_clean", "teacher_occluded", "baseline")},
               "test_rmse_baseline": m["all_metrics"]["baseline"]["rmse"],
               "seconds": m["seconds"]["total"]}
        with args.out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
