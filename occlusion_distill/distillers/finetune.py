"""``finetune``: the baseline. The student trains on occluded faces with the task loss alone, no teacher."""

from __future__ import annotations


import torch

from ..models.network import ModelOutput
from .base import Distiller


class Finetune(Distiller):
    """Baseline: fine-tune on occluded faces with the task loss only (no teacher)."""

    uses_teacher = False

    def forward(self, student: ModelOutput, targets: torch.Tensor,
                teacher: ModelOutput | None = None) -> dict[str, torch.Tensor]:
        loss = self.task.loss(student.logits, targets)
        return {"loss": loss, "task": loss.detach()}
