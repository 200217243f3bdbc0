"""``bench data``: can the input pipeline keep up with training?

Measured in one run, on the same faces, batch size and image size: the training input pipeline
(faces read from the data set, flipped, occluded and made into tensors by the same ``PairedFaces`` and
``DataLoader`` the trainer uses) against the training steps of the default backbone (forward, backward
and optimiser step on ready batches). The input must deliver at least twice what training consumes, or
training waits on data.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch.utils.data import DataLoader

from ..data.paired import PairedFaces
from ..models.backbones import DEFAULT_BACKBONE
from ..models.network import build_model
from ..registry import registry


def run(*, dataset: str = "synthfaces", dataset_args: dict[str, Any] | None = None, task: str = "expression",
        occlusion: str = "mask", image_size: int = 40, batch_size: int = 64, num_workers: int = 0,
        batches: int = 40, backbone: str = DEFAULT_BACKBONE, reporter: Any = None) -> dict[str, Any]:
    data, _ = registry("datasets").build(dataset, **(dataset_args or {}))
    task_obj, _ = registry("tasks").build(task)
    occ, _ = registry("occlusions").build(occlusion)
    channels = data.native_channels
    t0 = time.perf_counter()
    faces = data.load("train", image_size=image_size, channels=channels)
    t_load = time.perf_counter() - t0
    task_obj.setup(faces)
    pairs = PairedFaces(faces, task_obj.targets(faces), occ, flip=True, seed=0, need_clean=False)
    loader = DataLoader(pairs, batch_size=batch_size, shuffle=True, num_workers=num_workers, drop_last=True,
                        generator=torch.Generator().manual_seed(0))
    n_batches = min(batches, len(loader))
    bar = reporter.stage("input", n_batches) if reporter else None
    ready = []
    t0 = time.perf_counter()
    for k, batch in enumerate(loader):
        if k == n_batches:
            break
        ready.append((batch["occluded"], batch["target"]))
        if bar:
            bar.advance(1)
    t_input = time.perf_counter() - t0
    if bar:
        bar.close()

    model = build_model(backbone, in_chans=channels, image_size=image_size, output_dim=task_obj.output_dim)
    model = model.to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        loss = task_obj.loss(model(x.contiguous(memory_format=torch.channels_last)).logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for x, y in ready[:3]:  # warm-up: first steps pay for allocations
        step(x, y)
    bar = reporter.stage("training", len(ready)) if reporter else None
    t0 = time.perf_counter()
    for x, y in ready:
        step(x, y)
        if bar:
            bar.advance(1)
    t_train = time.perf_counter() - t0
    if bar:
        bar.close()
    samples = len(ready) * batch_size
    input_rate, train_rate = samples / t_input, samples / t_train
    return {
        "dataset": dataset, "occlusion": occlusion, "task": task, "backbone": backbone, "image_size": image_size,
        "channels": channels, "batch_size": batch_size, "num_workers": num_workers, "batches": len(ready),
        "torch_threads": torch.get_num_threads(),
        "load_faces_per_s": round(len(faces) / max(t_load, 1e-9), 1),
        "input_samples_per_s": round(input_rate, 1), "train_samples_per_s": round(train_rate, 1),
        "input_over_train": round(input_rate / train_rate, 2),
    }
