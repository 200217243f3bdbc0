"""``Distiller``: how a student learns on occluded faces, with or without a frozen clean-face teacher.

A distiller is an ``nn.Module`` so it may own parameters (a projection head, say); they are trained
with the student. ``forward`` gets the student's output on the occluded faces, the targets, and the
frozen teacher's output on the *clean* version of the same faces, and returns named loss terms with
the total under ``"loss"``. ``train_student`` is the whole stage; the default runs the shared trainer
with this distiller as the criterion, and a distiller that needs another procedure overrides it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from ..models.network import ModelOutput
from ..tasks.base import Task

if TYPE_CHECKING:
    from ..engine.stage import StageContext


class Distiller(nn.Module):
    """Base class of distiller plugins."""

    uses_teacher: bool = True

    def __init__(self, task: Task):
        super().__init__()
        self.task = task

    def forward(self, student: ModelOutput, targets: torch.Tensor,
                teacher: ModelOutput | None = None) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def hparams(self) -> dict[str, Any]:
        """The settings that define this distiller, for config.json and cache keys."""
        return {}

    def student_template(self, teacher: nn.Module) -> nn.Module:
        """An untrained model of the student's architecture (a cached student's weights are loaded into it)."""
        import copy

        return copy.deepcopy(teacher)

    def train_student(self, ctx: "StageContext") -> nn.Module:
        from ..engine.trainer import fit

        return fit(ctx, criterion=self)
