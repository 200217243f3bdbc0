"""The types a stage is made of: the evaluation set, the stage context a distiller trains through, and the
teacher's output table; ``TrainingDiverged`` and ``better_score``, which a stage with its own procedure
(``combined``) uses too.

``StageContext.fit(criterion)`` trains the stage's model with a criterion (a distiller) through the
engine's trainer, so that a distiller's ``train_student`` never imports the engine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from ..data.mixing import PairMix
from ..data.paired import PairedFaces
from ..errors import RunFailed
from ..models.network import FaceModel, ModelOutput
from ..tasks.base import Task
from .checkpoint import StageCheckpoint


class TrainingDiverged(RunFailed):
    """The loss became NaN or infinite, or no epoch had a finite validation score."""


def better_score(task: Task, new: float, old: float | None) -> bool:
    """Whether validation score ``new`` beats the best so far (``old``, None before the first). A NaN or
    infinite score never does and is never a best to beat (a checkpoint may hold one), so a stage keeps
    its first finite epoch: NaN compares False with everything and would otherwise stick as the best."""
    if not math.isfinite(new):
        return False
    if old is None or not math.isfinite(old):
        return True
    return new > old if task.higher_is_better else new < old


@dataclass
class EvalSet:
    images: torch.Tensor  # (N, C, H, W) in [0, 1]: the model normalises (data.to_tensor)
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
    #: the run's choice: "cached" runs the teacher once per face and flip, "online" at every step. A
    #: distiller that declares "online" (or feature layers) gets online outputs; this field stays as given
    teacher_outputs: str = "cached"
    history: list[dict[str, Any]] = field(default_factory=list)
    #: another distiller's student of this run by name, from the run cache or trained now (``combined``);
    #: an optional second argument gives that distiller's options (a dict; its defaults otherwise)
    student_for: Callable[..., FaceModel] | None = None
    #: the run's ``TeacherTable``, computed once (or read from the run cache) and shared by its students
    teacher_table: Callable[[], "TeacherTable"] | None = None
    #: where this stage saves and resumes its state (None: no checkpoints, e.g. library use)
    checkpoint: StageCheckpoint | None = None
    amp: str = "off"  # off, auto, bf16, fp16
    compile: bool = False
    #: mixes each training batch's views and targets with one draw (``data.mixing.PairMix``); None: no mixing
    mix: PairMix | None = None
    #: the engine's training function, ``trainer(ctx, criterion) -> model``; the protocol sets it
    trainer: Callable[["StageContext", nn.Module], FaceModel] | None = None

    def fit(self, criterion: nn.Module) -> FaceModel:
        """Train ``self.model`` with ``criterion`` (a distiller) and return it with its best validation
        weights; raises ``RunFailed`` when the context was built without a trainer."""
        if self.trainer is None:
            raise RunFailed(f"stage '{self.stage}': this context has no trainer to fit with")
        return self.trainer(self, criterion)


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
