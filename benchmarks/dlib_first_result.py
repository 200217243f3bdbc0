"""One JSON line per finished run directory: its test scores, validation history and command, for
``benchmarks/results/dlib-first-result/results.jsonl`` (see ``dlib_first_result.sh``).

    python benchmarks/dlib_first_result.py RUN_DIR... > results.jsonl
"""
import json
import sys
from pathlib import Path

KEEP = ("task", "occlusion", "distiller", "backbone", "dataset", "seed", "metric", "unit", "teacher_clean",
        "teacher_occluded", "baseline", "student", "gap_closed", "all_metrics", "n_test", "n_train", "seconds",
        "device", "versions")

for run in map(Path, sys.argv[1:]):
    metrics = json.loads((run / "metrics.json").read_text())
    config = json.loads((run / "config.json").read_text())
    history = json.loads((run / "history.json").read_text())
    print(json.dumps({
        "run": run.name, **{k: metrics[k] for k in KEEP if k in metrics},
        "image_size": config["image_size"], "epochs": [config["teacher_epochs"], config["student_epochs"]],
        "lr": [config["lr"], config["student_lr"]], "pretrained": config["pretrained"],
        "backbone_args": config.get("backbone_args", {}), "command": config["command"],
        # the epoch each stage kept is its best on validation faces (clean for the teacher, occluded after)
        "val_history": {stage: [{k: round(v, 2) for k, v in e.items() if k.startswith("val_") or k == "epoch"}
                                for e in records] for stage, records in history.items()},
    }))
