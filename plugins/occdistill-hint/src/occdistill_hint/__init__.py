"""``hint``: FitNets hint learning (Romero et al., ICLR 2015) as an occlusion-distill distiller plugin.

The student sees the occluded face, the frozen teacher the clean one. At a middle layer, the student's
feature map (the *guided* layer) goes through a 1x1 convolution, the regressor, and is pulled towards
the teacher's feature map at the same layer (the *hint*):

    L = task(y, s) + λ · mean((r(F_s(occluded)) − F_t(clean))²)

FitNets trains in two stages (hints first, then soft targets); here the hint term joins the task loss in
one stage, as the toolkit's other distillers do, so ``hint`` slots into the same protocol and benchmarks.
The regressor trains with the student and is dropped afterwards: the student keeps its architecture.

The built-in distillers only see the models' outputs; this one reads inside them, through forward hooks,
and needs the teacher's feature map at every step, so it runs the teacher on each batch (``online``)
instead of looking its outputs up once per face.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from occlusion_distill.distillers import Distiller
from occlusion_distill.errors import UsageError

if TYPE_CHECKING:
    from occlusion_distill.engine.stage import StageContext
    from occlusion_distill.models.network import ModelOutput
    from occlusion_distill.tasks.base import Task

__version__ = "0.1.0"


def feature_maps(backbone: nn.Module, example: torch.Tensor) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every leaf module's 4-D output, in the order a forward pass produces them."""
    seen: list[tuple[str, tuple[int, ...]]] = []
    handles = []
    for name, module in backbone.named_modules():
        if name and not any(True for _ in module.children()):
            handles.append(module.register_forward_hook(
                lambda m, i, out, name=name: seen.append((name, tuple(out.shape)))
                if isinstance(out, torch.Tensor) and out.ndim == 4 else None))
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            backbone(example)
    finally:
        backbone.train(was_training)
        for h in handles:
            h.remove()
    return seen


def middle_layer(backbone: nn.Module, example: torch.Tensor) -> str:
    """The end of the middle resolution stage: FitNets' "middle layer", found for any CNN backbone."""
    return _middle(feature_maps(backbone, example))


def _middle(found: list[tuple[str, tuple[int, ...]]]) -> str:
    maps = [(n, s) for n, s in found if s[-1] > 1]  # not global pooling
    if not maps:
        raise UsageError("hint: the backbone produces no spatial feature map to take a hint from")
    sizes = list(dict.fromkeys(s[-2:] for _, s in maps))  # resolutions, in order
    level = sizes[(len(sizes) - 1) // 2]
    return [n for n, s in maps if s[-2:] == level][-1]


class HintDistiller(Distiller):
    """FitNets hint: the student's middle feature map of the occluded face regresses the teacher's of the clean face."""

    def __init__(self, task: "Task", lambda_: float = 1.0, layer: str = "auto"):
        super().__init__(task)
        if isinstance(lambda_, bool) or not isinstance(lambda_, (int, float)) or not 0 <= lambda_ < float("inf"):
            raise UsageError(f"hint: lambda must be a finite number >= 0, not {lambda_!r}")
        if not isinstance(layer, str) or not layer:
            raise UsageError(f"hint: layer must be a module name of the backbone, or auto, not {layer!r}")
        self.lambda_ = float(lambda_)
        self.layer = layer
        self.regressor: nn.Module | None = None
        self._features: dict[str, torch.Tensor] = {}
        self._handles: list[Any] = []

    def hparams(self) -> dict[str, Any]:
        return {"lambda": self.lambda_, "layer": self.layer}

    # -- the hooks ------------------------------------------------------------------------------------
    def attach(self, student: nn.Module, teacher: nn.Module, example: torch.Tensor) -> str:
        """Hook the guided layer of ``student`` and the hint layer of ``teacher``; build the regressor.

        Returns the layer's name (within the backbone). ``detach`` removes the hooks.
        """
        s_net, t_net = getattr(student, "backbone", student), getattr(teacher, "backbone", teacher)
        example = example.to(next(teacher.parameters()).device)
        maps_of = {"student": feature_maps(s_net, example), "teacher": feature_maps(t_net, example)}
        name = _middle(maps_of["teacher"]) if self.layer == "auto" else self.layer
        shapes = {}
        for role in ("student", "teacher"):
            maps = dict(maps_of[role])
            if name not in maps:
                raise UsageError(f"hint: the {role} backbone has no layer '{name}' with a 4-D output; "
                                 f"layers: {', '.join(list(maps)[-12:])}")
            shapes[role] = maps[name]
        modules = dict(s_net.named_modules()), dict(t_net.named_modules())
        self._handles = [modules[0][name].register_forward_hook(self._keep("student")),
                         modules[1][name].register_forward_hook(self._keep("teacher"))]
        # a fresh regressor per stage: one stage's fit must not warm-start another's (a resumed stage loads its own)
        self.regressor = nn.Conv2d(shapes["student"][1], shapes["teacher"][1], kernel_size=1, bias=False)
        return name

    def _keep(self, role: str):
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            # the student's evaluation passes are no training step: keep only what the loss will use
            if role == "teacher" or module.training:
                self._features[role] = output
        return hook

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self._features.clear()

    # -- the loss -------------------------------------------------------------------------------------
    def forward(self, student: "ModelOutput", targets: torch.Tensor,
                teacher: "ModelOutput | None" = None) -> dict[str, torch.Tensor]:
        task_loss = self.task.loss(student.logits, targets)
        s, t = self._features.pop("student", None), self._features.pop("teacher", None)
        if s is None or t is None or self.regressor is None:
            raise RuntimeError("hint: no feature maps were captured; train through train_student(), or call "
                               "attach(student, teacher, example) and run the teacher on the clean faces")
        if s.shape[-2:] != t.shape[-2:]:
            s = F.adaptive_avg_pool2d(s, t.shape[-2:])
        hint = F.mse_loss(self.regressor(s).float(), t.detach().float())
        return {"loss": task_loss + self.lambda_ * hint, "task": task_loss.detach(), "hint": hint.detach()}

    def train_student(self, ctx: "StageContext") -> nn.Module:
        from occlusion_distill.engine.trainer import fit

        self.attach(ctx.model, ctx.teacher, ctx.val.images[:2])
        before = ctx.teacher_outputs
        ctx.teacher_outputs = "online"  # the hint layer is needed at every step, not only the outputs
        try:
            return fit(ctx, criterion=self)
        finally:
            ctx.teacher_outputs = before
            self.detach()
