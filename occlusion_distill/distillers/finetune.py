"""``finetune``: the baseline. The student trains on occluded faces with the task loss alone, no teacher."""

from __future__ import annotations

from typing import Any

import torch

from ..models.network import ModelOutput
from .base import Distiller


class Finetune(Distiller):
    """Baseline: fine-tune on occluded faces with the task loss only (no teacher)."""

    uses_teacher = False
    is_baseline = True

    def hparams(self) -> dict[str, Any]:
        return {}  # no option; the key every cached baseline was stored under

    def compute_loss(self, student: ModelOutput, targets: torch.Tensor,
                     teacher: ModelOutput | None) -> dict[str, torch.Tensor]:
        loss = self.task.loss(student.logits, targets)
        return {"loss": loss, "task": loss}
