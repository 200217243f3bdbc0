"""Issue 18, build item 4: how dlib's folded batch norms should train, measured on the teacher stage of one
real cell (FER+, expression, upper-half, 112 px, seed 0; validation split only).

dlib-resnet29 is built twice: ``norm=affine`` (dlib's folded scale and shift, learnable) and
``norm=batchnorm`` (fresh BatchNorm2d initialised from them). Each teacher is trained exactly as
``benchmarks/dlib_first_result.sh`` trains it (4 epochs, lr 1e-4, the toolkit's protocol and trainer); a
teacher that run already trained is read from its run cache, not trained again. Printed, one JSON line per
norm: the teacher's validation history and its validation scores on clean and on occluded faces. Made with

    python benchmarks/dlib_norm_choice.py runs/dlib-first-result/cache \\
        > benchmarks/results/dlib-first-result/norm-choice.jsonl

with FER+ prepared in ``$FERPLUS`` (default /work/prepared/ferplus), on 2 CPU cores; about 25 minutes per
teacher that is not in the cache.
"""
import json
import os
import sys
import time

from occlusion_distill.config import RunConfig
from occlusion_distill.engine.cache import ModelCache
from occlusion_distill.engine.trainer import evaluate
from occlusion_distill.protocol.pipeline import ProtocolRun


def config(norm: str) -> RunConfig:
    # what `occdistill run ... --backbone-arg norm=NORM` in dlib_first_result.sh resolves to
    data = os.path.abspath(os.environ.get("FERPLUS", "/work/prepared/ferplus"))
    return RunConfig.from_options(
        "default", task="expression", occlusion="upper-half", distiller="kd", backbone="dlib-resnet29",
        dataset="ferplus", dataset_args={"data": data}, image_size=112, teacher_epochs=4, student_epochs=4,
        lr=1e-4, student_lr=1e-4, seed=0, pretrained=True, backbone_args={"norm": norm})


def main(cache_dir: str, norms: list[str]) -> None:
    for norm in norms:
        t0 = time.time()
        run = ProtocolRun(config(norm), cache=ModelCache(cache_dir))
        teacher, data = run.teacher(), run.load_data()
        task = run.parts.task
        scores = {name: evaluate(teacher, faces, task, run.device)
                  for name, faces in (("val_clean", data.val_clean), ("val_occluded", data.val_occluded))}
        print(json.dumps({"norm": norm, "reused_from_cache": run.cached.get("teacher"),
                          "seconds": round(time.time() - t0), **scores,
                          "history": run.histories.get("teacher")}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:] or ["batchnorm", "affine"])
