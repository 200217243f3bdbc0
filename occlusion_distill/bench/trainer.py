"""``bench trainer``: the stage trainer's training throughput against a bare PyTorch loop.

In one process, on the same built-in faces: the engine's ``fit`` (through a ``StageContext``, as the
protocol trains a ``finetune`` student on occluded faces) and a bare loop written as a PyTorch tutorial
would (forward, task loss, backward, AdamW step, one-cycle schedule step), over copies of the same
model, the same ``PairedFaces`` in batches of the same size from a ``DataLoader``, and the same optimiser
and schedule. Both count images per second of training, data loading included; the trainer's
validation after each epoch is timed apart (between its last step and its epoch note) and taken out.
The rounds are interleaved and each side's best round counts, as in ``bench overhead``.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import torch
from torch.utils.data import DataLoader

from ..config import RunConfig
from ..data.paired import PairedFaces, occlude_all, to_tensor
from ..errors import UsageError
from ..engine.stage import EvalSet, StageContext
from ..engine.trainer import fit, seed_everything
from ..models.backbones import DEFAULT_BACKBONE
from ..models.network import FaceModel, build_model
from ..registry import registry
from ..tasks.base import Task

MIN_STEPS = 8  # with fewer, the warm-up phase of the one-cycle schedule (a quarter) is under two steps

class _Clock:
    """A stand-in for the reporter's stage bar that timestamps the trainer: ``advance`` follows each
    training step, ``note`` follows each epoch's validation, so the time from an epoch's last step to
    its note is that epoch's validation (and choosing the best weights)."""

    def __init__(self) -> None:
        self.steps = 0
        self.validation = 0.0
        self.epochs_noted = 0
        self._last = time.perf_counter()

    def __call__(self, stage: str, total: int = 0) -> "_Clock":
        self._last = time.perf_counter()
        return self

    def advance(self, n: int = 1) -> None:
        self.steps += n
        self._last = time.perf_counter()

    def note(self, text: str) -> None:
        self.validation += time.perf_counter() - self._last
        self.epochs_noted += 1

    def close(self) -> None:
        pass


def trainer_seconds(initial: FaceModel, task: Task, pairs: PairedFaces, val: EvalSet, *, epochs: int,
                    batch_size: int, lr: float, weight_decay: float) -> dict[str, Any]:
    """One ``fit`` of a copy of ``initial`` with a ``finetune`` criterion on occluded faces: its training
    seconds (validation taken out), the validation seconds and the steps."""
    clock = _Clock()
    ctx = StageContext(stage="student:finetune", model=copy.deepcopy(initial), task=task, train=pairs, val=val,
                       view="occluded", epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                       device=torch.device("cpu"), seed=0, progress=clock, trainer=fit)
    criterion = registry("distillers").create("finetune", task=task)
    t0 = time.perf_counter()
    ctx.fit(criterion)
    total = time.perf_counter() - t0
    return {"seconds": total - clock.validation, "validation_seconds": clock.validation, "steps": clock.steps,
            "epochs_timed_apart": clock.epochs_noted}


def bare_seconds(initial: FaceModel, task: Task, pairs: PairedFaces, *, epochs: int, batch_size: int, lr: float,
                 weight_decay: float) -> dict[str, Any]:
    """The same training as a bare PyTorch loop over a copy of ``initial``: seconds and steps."""
    model = copy.deepcopy(initial).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    pairs.need_clean, pairs.need_occluded = False, True
    per_epoch = len(pairs) // batch_size  # drop_last, as the trainer does when an epoch holds more than a batch
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max(1, epochs * per_epoch),
                                                    pct_start=0.25)
    steps = 0
    t0 = time.perf_counter()
    for epoch in range(epochs):
        pairs.set_epoch(epoch)
        loader = DataLoader(pairs, batch_size=batch_size, shuffle=True, drop_last=True,
                            generator=torch.Generator().manual_seed(epoch))
        for batch in loader:
            x = batch["occluded"].contiguous(memory_format=torch.channels_last)
            loss = task.loss(model(x).logits, batch["target"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            steps += 1
    return {"seconds": time.perf_counter() - t0, "steps": steps}


def run(*, n_train: int = 2000, epochs: int = 2, rounds: int = 3, image_size: int | None = None,
        batch_size: int | None = None, task: str = "expression", occlusion: str = "mask", n_val: int = 64,
        reporter: Any = None) -> dict[str, Any]:
    """Images/s of the trainer and of the bare loop, and their ratio (1.0: the trainer costs nothing);
    ``UsageError`` when the sizes make fewer than ``MIN_STEPS`` training steps.

    ``image_size``, ``batch_size`` and the student's learning rate and weight decay default to a run's
    (``RunConfig``); the backbone is the default one, trained on CPU from random weights.
    """
    defaults = RunConfig()
    image_size = image_size or defaults.image_size
    batch_size = batch_size or defaults.batch_size
    lr, weight_decay = defaults.student_lr, defaults.weight_decay
    if epochs * (n_train // batch_size) < MIN_STEPS:
        raise UsageError(f"{n_train} faces x {epochs} epoch(s) in batches of {batch_size} make "
                         f"{epochs * (n_train // batch_size)} steps; the one-cycle schedule needs at least "
                         f"{MIN_STEPS}: give more faces or epochs")
    data, _ = registry("datasets").build("synthfaces", n_train=n_train, n_val=n_val, n_test=n_val)
    channels = data.native_channels
    faces = data.load("train", image_size=image_size, channels=channels)
    val_faces = data.load("val", image_size=image_size, channels=channels)
    task_obj, _ = registry("tasks").build(task)
    task_obj.setup(faces)
    occ, _ = registry("occlusions").build(occlusion)
    pairs = PairedFaces(faces, task_obj.targets(faces), occ, flip=True, seed=0)
    val = EvalSet(to_tensor(occlude_all(val_faces, occ, 1)), task_obj.targets(val_faces))
    seed_everything(0)
    initial = build_model(DEFAULT_BACKBONE, in_chans=channels, image_size=image_size, output_dim=task_obj.output_dim)
    options = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay}
    bar = reporter.stage("rounds", 2 * rounds) if reporter else None
    history: list[dict[str, Any]] = []
    for r in range(rounds):  # interleaved, the order swapped each round: load on the machine hits both alike
        result: dict[str, Any] = {}
        for side in (("trainer", "bare") if r % 2 == 0 else ("bare", "trainer")):
            if side == "trainer":
                result["trainer"] = trainer_seconds(initial, task_obj, pairs, val, **options)
            else:
                result["bare"] = bare_seconds(initial, task_obj, pairs, **options)
            if bar:
                bar.advance(1)
        history.append(result)
    if bar:
        bar.close()
    best_trainer = min(history, key=lambda h: h["trainer"]["seconds"])["trainer"]
    best_bare = min(history, key=lambda h: h["bare"]["seconds"])["bare"]
    rate = {"trainer": best_trainer["steps"] * batch_size / best_trainer["seconds"],
            "bare": best_bare["steps"] * batch_size / best_bare["seconds"]}
    return {
        "images_per_second": {k: round(v, 1) for k, v in rate.items()},
        "ratio": round(rate["trainer"] / rate["bare"], 3),
        "seconds": {"trainer": round(best_trainer["seconds"], 3), "bare": round(best_bare["seconds"], 3),
                    "trainer_validation": round(best_trainer["validation_seconds"], 3)},
        "rounds": [{"trainer_seconds": round(h["trainer"]["seconds"], 3), "bare_seconds": round(h["bare"]["seconds"], 3),
                    "trainer_validation_seconds": round(h["trainer"]["validation_seconds"], 3)} for h in history],
        "setup": {"backbone": DEFAULT_BACKBONE, "image_size": image_size, "channels": channels,
                  "batch_size": batch_size, "faces": len(faces), "val_faces": len(val_faces), "epochs": epochs,
                  "steps": {"trainer": best_trainer["steps"], "bare": best_bare["steps"]},
                  "validation_timed_apart": best_trainer["epochs_timed_apart"] == epochs,
                  "lr": lr, "weight_decay": weight_decay, "task": task, "occlusion": occlusion,
                  "criterion": "finetune", "device": "cpu", "torch_threads": torch.get_num_threads(),
                  "rounds": rounds},
    }
