"""``kd``: soft-target knowledge distillation from the clean-face teacher (Hinton et al., 2015).

Classification: (1-λ)·CE(y, s) + λ·τ²·KL(softmax(t/τ) ‖ softmax(s/τ)); regression: (1-λ)·task loss + λ·|s − t|.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..errors import UsageError
from ..models.network import ModelOutput
from ..tasks.base import Task
from .base import Distiller


def kd_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, tau: float) -> torch.Tensor:
    """tau^2 * KL(softmax(t/tau) || softmax(s/tau)), averaged over the batch (Hinton et al.)."""
    log_p_s = F.log_softmax(student_logits / tau, dim=1)
    log_p_t = F.log_softmax(teacher_logits / tau, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * tau * tau


def soft_target_term(task: Task, student: ModelOutput, teacher: ModelOutput, tau: float) -> torch.Tensor:
    """KD's distillation term: τ²·KL(softmax(t/τ) ‖ softmax(s/τ)); for regression, |s − t| in the task's
    standardised units."""
    if task.regression:
        return F.l1_loss(student.logits.reshape(-1), teacher.logits.reshape(-1))
    return kd_kl(student.logits, teacher.logits, tau)


class SoftTargetKD(Distiller):
    """Soft-target KD: (1-λ)·task loss + λ·τ²·KL(teacher ‖ student); for age, λ·|student − teacher|."""

    def __init__(self, task: Task, lambda_: float = 0.5, tau: float = 4.0):
        super().__init__(task)
        if not 0.0 <= lambda_ <= 1.0:
            raise UsageError(f"kd: lambda must be in [0, 1], not {lambda_}")
        if tau <= 0:
            raise UsageError(f"kd: tau must be positive, not {tau}")
        self.lambda_ = float(lambda_)
        self.tau = float(tau)

    def hparams(self) -> dict[str, Any]:
        return {"lambda": self.lambda_, "tau": self.tau}

    def compute_loss(self, student: ModelOutput, targets: torch.Tensor,
                     teacher: ModelOutput | None) -> dict[str, torch.Tensor]:
        task_loss = self.task.loss(student.logits, targets)
        distill = soft_target_term(self.task, student, teacher, self.tau)
        loss = (1.0 - self.lambda_) * task_loss + self.lambda_ * distill
        return {"loss": loss, "task": task_loss, "distill": distill}
