"""Probe (validation split only): how dlib-resnet29 fine-tunes on FER+ at 112 px, clean faces, per norm and lr.

A first look toward issue 18's build item 4 (how dlib's folded batch norms should train), not a chosen
recipe: one seed, a seeded subset of the training faces, two epochs. Made with:

    .venv/bin/python benchmarks/dlib_finetune_probe.py 6000 1000 2 affine:5e-4 affine:1e-4 batchnorm:5e-4 batchnorm:1e-4 \
        > benchmarks/results/dlib-finetune-probe/probe.jsonl

with FER+ prepared at /work/prepared/ferplus (`occdistill data prepare ferplus --source ../shared/data`),
on 2 CPU cores, no GPU; about 150 s per line. Arguments: training faces, validation faces, epochs, then
norm:lr pairs (norm "affine": dlib's folded scale and shift, learnable; "batchnorm": fresh BatchNorm2d
initialised from them).
"""
import json
import os
import sys
import time

import torch
from occlusion_distill.registry import registry
from occlusion_distill.data.paired import PairedFaces, to_tensor
from occlusion_distill.engine.stage import EvalSet, StageContext
from occlusion_distill.engine.trainer import fit, seed_everything
from occlusion_distill.models.dlib_resnet import dlib_resnet29
from occlusion_distill.models.backbones import input_normalisation
from occlusion_distill.models.network import FaceModel

torch.set_num_threads(2)
n_train, n_val, epochs = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
configs = [c.split(":") for c in sys.argv[4:]]  # norm:lr
data, _ = registry("datasets").build("ferplus", data=os.environ.get("FERPLUS", "/work/prepared/ferplus"), n_train=n_train, n_val=n_val)
train = data.load("train", image_size=112, channels=1)
val = data.load("val", image_size=112, channels=1)
task, _ = registry("tasks").build("expression")
task.setup(train)
none, _ = registry("occlusions").build("none")
pairs = PairedFaces(train, task.targets(train), none, flip=True, seed=0)
evalset = EvalSet(to_tensor(val.images), task.targets(val))
for norm, lr in configs:
    seed_everything(0)
    net = dlib_resnet29(in_chans=1, pretrained=True, norm=norm)
    mean, std = input_normalisation(net, 1, "dlib-resnet29")
    model = FaceModel(net, 128, task.output_dim, mean=mean, std=std)
    ctx = StageContext(stage="teacher", model=model, task=task, train=pairs, val=evalset, view="clean", epochs=epochs,
                       batch_size=64, lr=float(lr), weight_decay=5e-4, device=torch.device("cpu"), seed=0, trainer=fit)
    t0 = time.time()
    fit(ctx, registry("distillers").create("finetune", task=task))
    print(json.dumps({"norm": norm, "lr": float(lr), "n_train": n_train, "n_val": n_val, "epochs": epochs,
                      "seconds": round(time.time() - t0), "history": ctx.history}), flush=True)
