"""``bench overhead``: what distillation costs on top of plain fine-tuning, and what mining costs.

In one run, on the same faces, backbone and batch size: seconds per training epoch of ``finetune``,
``kd`` and ``triplet`` (the training loop only: forward, loss, backward, optimiser step, data loading
included; validation excluded), in interleaved rounds, each distiller's best round counting. Distillers
read the teacher's outputs from the table the trainer builds once per run (``TeacherTable``): its one-off
cost is reported apart. ``finetune+augment`` and ``kd+augment`` train on augmented pairs (``--augment
default``), where the teacher runs on every batch (online). Then the cost of one mining step
(a batch of queries against a memory bank of 10k, 100k and 1M embeddings) with FAISS (``BankIndex``,
``auto``: exact flat index up to 50k entries, IVF above) next to an exact ``torch.cdist`` search.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..data.augment import FaceAugment
from ..data.paired import PairedFaces
from ..distillers.mining import BankIndex, MemoryBank, exact_search
from ..engine.stage import TeacherTable
from ..engine.trainer import seed_everything
from ..models.backbones import DEFAULT_BACKBONE
from ..models.network import build_model
from ..registry import registry

BANK_SIZES = (10_000, 100_000, 1_000_000)


def epoch_seconds(distiller: str, teacher, pairs: PairedFaces, task, batch_size: int, table) -> tuple[float, int]:
    """Seconds and steps of one epoch; ``table`` None: the teacher runs on each batch's clean view."""
    seed_everything(0)
    model = copy.deepcopy(teacher).requires_grad_(True).to(memory_format=torch.channels_last).train()
    dist, _ = registry("distillers").build(distiller, task=task)
    if hasattr(dist, "prepare"):
        dist.prepare(model.embed_dim, teacher.embed_dim)
    params = list(model.parameters()) + [p for p in dist.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    online = table is None and dist.uses_teacher
    pairs.need_clean, pairs.need_occluded = online, True
    loader = DataLoader(pairs, batch_size=batch_size, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(0))
    steps = 0
    t0 = time.perf_counter()
    for batch in loader:
        x = batch["occluded"].contiguous(memory_format=torch.channels_last)
        out = model(x)
        t_out = None
        if online:
            with torch.no_grad():
                t_out = teacher(batch["clean"].contiguous(memory_format=torch.channels_last))
        elif dist.uses_teacher:
            t_out = table.lookup(batch["index"], batch["flipped"])
        loss = dist(out, batch["target"], t_out)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps += 1
    return time.perf_counter() - t0, steps


def mining_ms(bank_size: int, dim: int, queries: int, k: int = 64, repeats: int = 5) -> dict[str, float]:
    """Milliseconds of one step's search: ``queries`` anchors against a full bank, FAISS and torch."""
    rng = np.random.default_rng(0)
    bank = MemoryBank(bank_size, dim)
    chunk = 100_000
    for start in range(0, bank_size, chunk):
        x = rng.normal(size=(min(chunk, bank_size - start), dim)).astype(np.float32)
        bank.add(x / np.linalg.norm(x, axis=1, keepdims=True), rng.integers(0, 8, len(x)))
    index = BankIndex(bank, "auto")
    index.update(np.arange(bank_size))
    q = rng.normal(size=(queries, dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    out = {"index": index.kind}
    for name, fn in (("faiss", lambda: index.search(q, k)), ("torch", lambda: exact_search(bank.embeddings, q, k))):
        fn()  # warm-up
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        out[name] = round(1000 * best, 2)
    # a training step also writes the batch into the bank and the index
    new = q.copy()
    t0 = time.perf_counter()
    for _ in range(repeats):
        index.update(bank.add(new, np.zeros(queries)))
    out["faiss_update"] = round(1000 * (time.perf_counter() - t0) / repeats, 2)
    return out


def run(*, image_size: int = 40, batch_size: int = 64, n_train: int = 5000, task: str = "expression",
        occlusion: str = "lower-half", bank_sizes: tuple[int, ...] = BANK_SIZES, rounds: int = 2,
        reporter: Any = None) -> dict[str, Any]:
    data, _ = registry("datasets").build("synthfaces", n_train=n_train, n_val=64, n_test=64)
    faces = data.load("train", image_size=image_size, channels=3)
    task_obj, _ = registry("tasks").build(task)
    task_obj.setup(faces)
    occ, _ = registry("occlusions").build(occlusion)
    teacher = build_model(DEFAULT_BACKBONE, in_chans=3, image_size=image_size, output_dim=task_obj.output_dim)
    teacher = teacher.to(memory_format=torch.channels_last).eval().requires_grad_(False)
    pairs = PairedFaces(faces, task_obj.targets(faces), occ, flip=True, seed=0)
    t0 = time.perf_counter()
    table = TeacherTable(teacher, pairs, torch.device("cpu"))
    table_s = time.perf_counter() - t0
    augmented = PairedFaces(faces, task_obj.targets(faces), occ, flip=True, seed=0, augment=FaceAugment())
    runs = {"finetune": ("finetune", pairs, table), "kd": ("kd", pairs, table), "triplet": ("triplet", pairs, table),
            "finetune+augment": ("finetune", augmented, None), "kd+augment": ("kd", augmented, None)}
    bar = reporter.stage("epochs", rounds * len(runs)) if reporter else None
    seconds, steps = dict.fromkeys(runs, float("inf")), 0
    for _ in range(rounds):  # interleaved rounds, best of each: load on the machine hits all alike
        for name, (distiller, data, lookup) in runs.items():
            sec, steps = epoch_seconds(distiller, teacher, data, task_obj, batch_size, lookup)
            seconds[name] = min(seconds[name], sec)
            if bar:
                bar.advance(1)
    if bar:
        bar.close()
    step_ms = 1000 * seconds["finetune"] / max(steps, 1)
    bar = reporter.stage("mining", len(bank_sizes)) if reporter else None
    mining = {}
    for size in bank_sizes:
        mining[str(size)] = mining_ms(size, teacher.embed_dim, batch_size)
        mining[str(size)]["share_of_step"] = round(mining[str(size)]["faiss"] / step_ms, 4)
        if bar:
            bar.advance(1)
    if bar:
        bar.close()
    return {
        "epoch_seconds": {k: round(v, 2) for k, v in seconds.items()},
        "ratio_to_finetune": {k: round(v / seconds["finetune"], 3) for k, v in seconds.items()},
        "mining_ms_per_step": mining,
        "setup": {"backbone": DEFAULT_BACKBONE, "embedding_dim": teacher.embed_dim, "image_size": image_size,
                  "batch_size": batch_size, "faces": len(faces), "steps_per_epoch": steps,
                  "finetune_step_ms": round(step_ms, 2), "teacher_table_seconds": round(table_s, 2),
                  "occlusion": occlusion, "task": task, "torch_threads": torch.get_num_threads(),
                  "rounds": rounds},
    }
