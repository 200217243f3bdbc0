"""Issue 18: does a longer schedule give dlib-resnet29 a better FER+ teacher? Chosen on validation, then tested.

Two teachers of the same cell (FER+ expression, 112 px, lr 1e-4, batch norm, seed 0, the toolkit's
one-cycle schedule), trained by ``occdistill run``: 4 epochs (``dlib_first_result.sh``) and 10 epochs
(the same command with ``--teacher-epochs 10``). Both are read from the run cache; nothing is trained
here. Each gets its validation scores on clean and on occluded faces. The one with the higher clean
validation accuracy (the teacher's own objective, the epoch its run kept) is chosen, and only the chosen
one is scored on the test faces. Beside them, the from-scratch ``simple-cnn`` teacher on the same
10-epoch schedule at 48 px (the toolkit's default learning rate), fixed in advance as the comparison and
scored on both splits. One JSON line per teacher, made with

    python benchmarks/dlib_teacher_length.py CACHE_DIR > benchmarks/results/dlib-first-result/teacher-length.jsonl

with FER+ prepared in ``$FERPLUS`` (default /work/prepared/ferplus).
"""
import json
import os
import sys

from occlusion_distill.config import RunConfig
from occlusion_distill.engine.cache import ModelCache
from occlusion_distill.engine.trainer import evaluate
from occlusion_distill.protocol.pipeline import ProtocolRun

# what each teacher's `occdistill run` resolved to; the 4-epoch one named its norm, the default since
DLIB = {"backbone": "dlib-resnet29", "pretrained": True, "image_size": 112, "lr": 1e-4, "student_lr": 1e-4}
CANDIDATES = {"dlib-resnet29, 4 epochs": {**DLIB, "teacher_epochs": 4, "backbone_args": {"norm": "batchnorm"}},
              "dlib-resnet29, 10 epochs": {**DLIB, "teacher_epochs": 10}}
REFERENCE = {"simple-cnn, 10 epochs": {"backbone": "simple-cnn", "image_size": 48, "teacher_epochs": 10}}


def config(**options) -> RunConfig:
    data = os.path.abspath(os.environ.get("FERPLUS", "/work/prepared/ferplus"))
    return RunConfig.from_options("default", task="expression", occlusion="upper-half", distiller="kd",
                                  dataset="ferplus", dataset_args={"data": data}, student_epochs=4, seed=0,
                                  **options)


def scores(name: str, options: dict, cache_dir: str, test: bool) -> dict:
    run = ProtocolRun(config(**options), cache=ModelCache(cache_dir))
    if run.stages.get("teacher", "teachers", run.teacher_key)[0] is None:
        sys.exit(f"the {name} teacher is not in {cache_dir}: train it with occdistill run first")
    teacher, data, task = run.teacher(), run.load_data(), run.parts.task
    row = {"teacher": name, "val_clean": evaluate(teacher, data.val_clean, task, run.device),
           "val_occluded": evaluate(teacher, data.val_occluded, task, run.device),
           "history": run.histories.get("teacher"), "config": run.cfg.to_dict()}
    if test:
        row.update(test_clean=evaluate(teacher, data.test_clean, task, run.device),
                   test_occluded=evaluate(teacher, data.test_occluded, task, run.device))
    return row


def main(cache_dir: str) -> None:
    rows = {name: scores(name, options, cache_dir, test=False) for name, options in CANDIDATES.items()}
    chosen = max(rows, key=lambda n: rows[n]["val_clean"]["accuracy"])
    rows[chosen] = {**scores(chosen, CANDIDATES[chosen], cache_dir, test=True), "chosen_on_validation": True}
    for name, options in REFERENCE.items():
        rows[name] = {**scores(name, options, cache_dir, test=True), "reference": True}
    for row in rows.values():
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python benchmarks/dlib_teacher_length.py CACHE_DIR")
    main(sys.argv[1])
