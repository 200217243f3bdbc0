"""What the teacher's soft targets carry, and what the students make of them: one suite cell and seed,
read from a run cache that holds its teacher, `finetune` student and distilled student. Training and
validation faces only; it never reads the test faces, so it can inform a recipe without touching them.

For the teacher on clean faces and each student on occluded faces, on the training and validation
splits: accuracy, mean top-1 probability and the entropy of the softened (τ = 2) distribution; and for
each student, KL(teacher on the clean face ‖ student on the occluded face) at τ = 2 and how often
their top-1 classes agree. The training faces are occluded once, deterministically (seed 999), and
neither flipped nor augmented: the same faces the students trained on, not the same draws.

    python benchmarks/kd_diagnosis.py benchmarks/suites/standard.yaml /work/prepared /work/runs/cache \
        ferplus/expression/upper-half/kd 2 benchmarks/results/standard-diagnosis/ferplus-upper-half-kd-s2.json

Arguments: SUITE DATA_ROOT CACHE_DIR CELL SEED OUT_JSON. A classification cell of a distiller that
trains one student (kd, triplet, ...); about 10 minutes on one core for FER+ at 48 px.
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from occlusion_distill.data.paired import occlude_all, to_tensor
from occlusion_distill.engine.cache import ModelCache
from occlusion_distill.errors import UsageError
from occlusion_distill.io import write_json
from occlusion_distill.protocol.pipeline import ProtocolRun
from suite_stages import cell_config, script, seed_arg, teacher_stored  # benchmarks/, beside this script

TAU = 2.0
TRAIN_OCCLUSION_SEED = 999
USAGE = "usage: kd_diagnosis.py SUITE DATA_ROOT CACHE_DIR CELL SEED OUT_JSON"


class NotStored(Exception):
    pass


class StoredModels(ProtocolRun):
    """A run that loads its stages from the cache and never trains one: a diagnosis is of the suite's models."""

    def stage(self, stage, kind, key, train, template):
        def refuse():  # called only where the stage cache misses
            raise NotStored(f"stage '{stage}'")
        return super().stage(stage, kind, key, refuse, template)


@torch.no_grad()
def predict(model: torch.nn.Module, images: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """(N, K) logits on the CPU, whatever device the model is on."""
    model.eval()
    device = next(model.parameters()).device
    return torch.cat([model(images[i:i + batch].to(device)).logits.cpu() for i in range(0, len(images), batch)])


def describe(logits: torch.Tensor, targets: np.ndarray) -> dict[str, float]:
    p, soft = F.softmax(logits, 1), F.softmax(logits / TAU, 1)
    return {"accuracy": round(float((logits.argmax(1).numpy() == targets).mean() * 100), 2),
            "mean_top1_probability": round(float(p.max(1).values.mean()), 3),
            "entropy_at_tau_nats": round(float(-(soft * soft.clamp_min(1e-12).log()).sum(1).mean()), 3)}


def versus(student: torch.Tensor, teacher: torch.Tensor) -> dict[str, float]:
    kl = F.kl_div(F.log_softmax(student / TAU, 1), F.log_softmax(teacher / TAU, 1), log_target=True,
                  reduction="batchmean")
    return {"kl_teacher_student_at_tau": round(float(kl), 4),
            "top1_agreement": round(float((student.argmax(1) == teacher.argmax(1)).float().mean() * 100), 2)}


def main(argv: list[str]) -> int:
    if len(argv) != 6:
        print(USAGE, file=sys.stderr)
        return 2
    suite_file, data_root, cache_dir, cell_id, seed, out = argv[0], argv[1], argv[2], argv[3], seed_arg(argv[4]), Path(argv[5])
    if out.is_dir():  # said now, not after minutes of scoring
        raise UsageError(f"OUT_JSON {out} is a directory: name the file to write")
    run = StoredModels(cell_config(suite_file, data_root, cell_id, seed), None, ModelCache(cache_dir))
    if run.preflight().task.regression:
        print(f"{cell_id} is a regression cell: this diagnosis reads class probabilities", file=sys.stderr)
        return 2
    if not teacher_stored(run):
        print(f"seed {seed}'s teacher is not in {cache_dir}: train it first (benchmarks/suite_stages.py)", file=sys.stderr)
        return 2
    data = run.load_data()
    try:
        models = {"teacher": run.teacher(), "finetune": run.baseline(), run.cfg.distiller: run.student()}
    except NotStored as exc:
        print(f"{exc} of seed {seed} is not in {cache_dir}: train it first (benchmarks/suite_stages.py)", file=sys.stderr)
        return 2
    train = data.train.faces
    targets = {"train": data.train.targets.numpy(), "val": np.asarray(data.val_clean.targets)}
    clean = {"train": to_tensor(train.images), "val": data.val_clean.images}
    occluded = {"train": to_tensor(occlude_all(train, run.parts.occlusion, TRAIN_OCCLUSION_SEED)),
                "val": data.val_occluded.images}
    teacher = {split: predict(models["teacher"], clean[split]) for split in clean}
    result = {"cell": cell_id, "seed": seed, "tau": TAU,
              "teacher_clean": {split: describe(teacher[split], targets[split]) for split in teacher}}
    for name in list(models)[1:]:
        logits = {split: predict(models[name], occluded[split]) for split in occluded}
        result[f"{name}_occluded"] = {split: describe(logits[split], targets[split]) for split in logits}
        result[f"{name}_vs_teacher"] = {split: versus(logits[split], teacher[split]) for split in logits}
    write_json(out, result)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    script(main, "kd_diagnosis.py")
