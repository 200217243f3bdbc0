"""One training loop for every stage: AdamW + one-cycle, best epoch on validation, seeded order."""

from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from ..data.paired import PairedFaces
from ..errors import RunFailed, UsageError
from ..models.network import FaceModel, ModelOutput
from ..tasks.base import Task

TRAINER_VERSION = 1  # bump when a change alters what a given config trains (invalidates caches)


class TrainingDiverged(RunFailed):
    """The loss became NaN or infinite."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UsageError(f"unknown device '{name}': {str(exc).splitlines()[0]}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available here (use --device cpu or auto)")
    return device


@dataclass
class EvalSet:
    images: torch.Tensor  # (N, C, H, W) in [-1, 1]
    targets: np.ndarray


@dataclass
class StageContext:
    """Everything a stage needs; a distiller's ``train_student`` receives it."""

    stage: str
    model: FaceModel
    task: Task
    train: PairedFaces
    val: EvalSet
    view: str  # "clean" (teacher) or "occluded" (students)
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    device: torch.device
    seed: int
    num_workers: int = 0
    teacher: FaceModel | None = None
    progress: Callable[..., Any] | None = None  # reporter.stage(...) factory
    teacher_outputs: str = "cached"  # "cached": run the teacher once per face and flip; "online": every step
    history: list[dict[str, Any]] = field(default_factory=list)
    #: another distiller's student of this run by name, from the run cache or trained now (``combined``)
    student_for: Callable[[str], FaceModel] | None = None
    #: the run's ``TeacherTable``, computed once (or read from the run cache) and shared by its students
    teacher_table: Callable[[], "TeacherTable"] | None = None


class TeacherTable:
    """The frozen teacher's outputs on every clean training face, unflipped and flipped.

    When the clean view is a function of (face, flip) alone, these equal what the teacher would give
    at each step, so distillation steps cost no teacher forward pass.
    """

    def __init__(self, teacher: nn.Module | None, train: PairedFaces | None, device: torch.device,
                 batch_size: int = 256, tensors: tuple[torch.Tensor, torch.Tensor] | None = None):
        if tensors is not None:  # stored outputs (the run cache): (2, N, K) logits, (2, N, D) embeddings
            self.logits, self.embeddings = (t.to(device) for t in tensors)
            return
        logits, embeddings = [], []
        teacher.eval()
        with torch.no_grad():
            for flipped in (False, True):
                outs = [teacher(views.to(device).contiguous(memory_format=torch.channels_last))
                        for views in train.clean_views(flipped, batch_size)]
                logits.append(torch.cat([o.logits for o in outs]))
                embeddings.append(torch.cat([o.embedding for o in outs]))
        self.logits = torch.stack(logits)  # (2, N, K): [flipped, face]
        self.embeddings = torch.stack(embeddings)  # (2, N, D)

    def lookup(self, index: torch.Tensor, flipped: torch.Tensor) -> ModelOutput:
        f, i = flipped.long().to(self.logits.device), index.to(self.logits.device)
        return ModelOutput(self.logits[f, i], self.embeddings[f, i])


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 256) -> np.ndarray:
    model.eval()
    outs = []
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size].to(device).contiguous(memory_format=torch.channels_last)
        outs.append(model(x).logits.float().cpu())
    return torch.cat(outs).numpy()


def evaluate(model: nn.Module, data: EvalSet, task: Task, device: torch.device) -> dict[str, float]:
    return task.metrics(predict(model, data.images, device), data.targets)


def _better(task: Task, new: float, old: float | None) -> bool:
    if old is None:
        return True
    return new > old if task.higher_is_better else new < old


def fit(ctx: StageContext, criterion: nn.Module) -> FaceModel:
    """Train ``ctx.model`` with ``criterion`` (a distiller); returns it with its best validation weights."""
    device = ctx.device
    # channels-last runs the convolutions of small faces markedly faster, on CPU as on GPU
    model = ctx.model.to(device, memory_format=torch.channels_last)
    criterion = criterion.to(device)
    teacher = ctx.teacher
    uses_teacher = bool(getattr(criterion, "uses_teacher", False))
    if uses_teacher:
        if teacher is None:
            raise RunFailed(f"stage '{ctx.stage}': the distiller needs a teacher")
        teacher = teacher.to(device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    table = None
    if uses_teacher and ctx.teacher_outputs == "cached" and getattr(ctx.train, "deterministic_clean", False):
        table = ctx.teacher_table() if ctx.teacher_table is not None else TeacherTable(teacher, ctx.train, device)
    ctx.train.need_clean = ctx.view == "clean" or (uses_teacher and table is None)
    ctx.train.need_occluded = ctx.view == "occluded"

    params = [p for p in list(model.parameters()) + list(criterion.parameters()) if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=ctx.lr, weight_decay=ctx.weight_decay)
    generator = torch.Generator().manual_seed(ctx.seed)
    drop_last = len(ctx.train) > ctx.batch_size  # a batch of one would break BatchNorm
    loader = DataLoader(ctx.train, batch_size=ctx.batch_size, shuffle=True, generator=generator,
                        num_workers=ctx.num_workers, drop_last=drop_last,
                        persistent_workers=False, pin_memory=device.type == "cuda")
    steps = ctx.epochs * len(loader)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=ctx.lr, total_steps=max(steps, 1),
                                                    pct_start=0.25)
    best_score, best_state = None, None
    progress = ctx.progress(ctx.stage, total=steps) if ctx.progress else None
    step = 0
    try:
        for epoch in range(ctx.epochs):
            ctx.train.set_epoch(epoch)
            model.train()
            sums: dict[str, float] = {}
            for batch in loader:
                x = batch[ctx.view].to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
                y = batch["target"].to(device, non_blocking=True)
                out = model(x)
                t_out: ModelOutput | None = None
                if table is not None:
                    t_out = table.lookup(batch["index"], batch["flipped"])
                elif uses_teacher:
                    with torch.no_grad():
                        t_out = teacher(batch["clean"].to(device, non_blocking=True))
                terms = criterion(out, y, t_out)
                loss = terms["loss"]
                if not torch.isfinite(loss):
                    raise TrainingDiverged(f"stage '{ctx.stage}': the loss became {loss.item()} at epoch "
                                           f"{epoch + 1}, step {step + 1}; try a lower learning rate")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                step += 1
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
                if progress:
                    progress.advance(1)
            val = evaluate(model, ctx.val, ctx.task, device)
            score = val[ctx.task.metric]
            record = {"epoch": epoch + 1, **{f"train_{k}": v / max(len(loader), 1) for k, v in sums.items()},
                      **{f"val_{k}": v for k, v in val.items()}, "lr": scheduler.get_last_lr()[0]}
            ctx.history.append(record)
            if _better(ctx.task, score, best_score):
                best_score = score
                best_state = copy.deepcopy(model.state_dict())
            if progress:
                progress.note(f"ep {epoch + 1}/{ctx.epochs} val {ctx.task.metric} {score:.1f} (best {best_score:.1f})")
    finally:
        if progress:
            progress.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    if best_score is None or not math.isfinite(best_score):
        raise TrainingDiverged(f"stage '{ctx.stage}': no finite validation score")
    return model
