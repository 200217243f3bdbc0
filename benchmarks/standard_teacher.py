"""Issue 19: which teacher does the `standard` suite train? Chosen on clean validation faces, then tested.

Seed 100's sweep teacher (the default `simple-cnn`, 24-48-96-192 channels, about 0.6 M parameters)
scored 83.35% on clean FER+ test faces, short of the 84.5% the issue asks for; the probe the issue cites
used a 1.2 M-parameter CNN of 32-64-128-256 channels on the same 12-epoch schedule, at batch 128. Each
candidate in ``CANDIDATES`` is trained (or read from the run cache) with the suite's settings on seed
100, which the suite's seeds 0-2 never use (48 px, 12 epochs, batch 64, lr 3e-3), changed only where the
candidate says. The one with the higher clean validation accuracy (the
teacher's own objective, at the epoch its run kept) is chosen, and only that one is scored on the test
faces. One JSON line per teacher:

    python benchmarks/standard_teacher.py CACHE_DIR --train    # trains what the cache lacks; resumes
    python benchmarks/standard_teacher.py CACHE_DIR --train augment    # only candidates whose names contain a word given
    python benchmarks/standard_teacher.py CACHE_DIR > benchmarks/results/standard-sweeps/teacher.jsonl

with FER+ prepared in ``$FERPLUS`` (default prepared/ferplus).
"""
import json
import os
import sys
from pathlib import Path

from occlusion_distill.config import RunConfig
from occlusion_distill.engine.cache import ModelCache
from occlusion_distill.engine.trainer import evaluate
from occlusion_distill.protocol.pipeline import ProtocolRun
from occlusion_distill.report import RichReporter

SEED = 100
SUITE = {"backbone": "simple-cnn", "image_size": 48, "teacher_epochs": 12, "student_epochs": 8, "batch_size": 64}
# each candidate changes the suite's settings above; the cache keys keep their teachers apart
CANDIDATES = {"simple-cnn 24-48-96-192 (default)": {},
              "simple-cnn 32-64-128-256": {"backbone_args": {"widths": [32, 64, 128, 256]}},
              # the probe's batch (fewer, less noisy steps at the same lr)
              "simple-cnn batch 128": {"batch_size": 128},
              # the train loss falls to ~0.1 by epoch 12 while validation stalls: regularise with the
              # toolkit's pair augmentation (which every stage then gets, students included)
              "simple-cnn augment": {"augment": "default"},
              # augmented, the train loss is still ~0.4 at epoch 12 and validation still rising: longer, or wider
              "simple-cnn augment 20 epochs": {"augment": "default", "teacher_epochs": 20},
              "simple-cnn 32-64-128-256 augment": {"augment": "default", "backbone_args": {"widths": [32, 64, 128, 256]}}}


def run_for(options: dict, cache_dir: str, name: str) -> ProtocolRun:
    data = os.path.abspath(os.environ.get("FERPLUS", "prepared/ferplus"))
    cfg = RunConfig.from_options("default", task="expression", occlusion="upper-half", distiller="finetune",
                                 dataset="ferplus", dataset_args={"data": data}, seed=SEED, **{**SUITE, **options})
    resume = Path(cache_dir) / "resume-teachers" / name.split(" (")[0].replace(" ", "-")
    return ProtocolRun(cfg, RichReporter(quiet=True), ModelCache(cache_dir), checkpoint_dir=resume,
                       discard_stale=True)


def scores(name: str, options: dict, cache_dir: str, test: bool) -> dict:
    run = run_for(options, cache_dir, name)
    if run.stages.get("teacher", "teachers", run.teacher_key)[0] is None:
        sys.exit(f"the '{name}' teacher is not in {cache_dir}: run this script with --train first")
    teacher, data, task = run.teacher(), run.load_data(), run.parts.task
    row = {"teacher": name, "parameters": sum(p.numel() for p in teacher.parameters()),
           "val_clean": evaluate(teacher, data.val_clean, task, run.device),
           "history": run.histories.get("teacher"), "config": run.cfg.to_dict()}
    if test:
        row.update(test_clean=evaluate(teacher, data.test_clean, task, run.device))
    return row


def main(cache_dir: str, train: bool, only: list[str]) -> None:
    if train:
        for name, options in CANDIDATES.items():
            if only and not any(word in name for word in only):
                continue
            run_for(options, cache_dir, name).teacher()
            print(f"{name}: trained or found in {cache_dir}", file=sys.stderr)
        return
    rows = {name: scores(name, options, cache_dir, test=False) for name, options in CANDIDATES.items()}
    chosen = max(rows, key=lambda n: rows[n]["val_clean"]["accuracy"])
    rows[chosen] = {**scores(chosen, CANDIDATES[chosen], cache_dir, test=True), "chosen_on_validation": True}
    for row in rows.values():
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
        sys.exit(__doc__)
    main(sys.argv[1], "--train" in sys.argv[2:], [a for a in sys.argv[2:] if not a.startswith("-")])
