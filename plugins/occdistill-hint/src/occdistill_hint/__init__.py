"""``hint``: FitNets hint learning (Romero et al., ICLR 2015) as an occlusion-distill distiller plugin.

The student sees the occluded face, the frozen teacher the clean one. At a middle layer, the student's
feature map (the *guided* layer) goes through a 1x1 convolution, the regressor, and is pulled towards
the teacher's feature map at the same layer (the *hint*):

    L = task(y, s) + λ · mean((r(F_s(occluded)) − F_t(clean))²)

FitNets trains in two stages (hints first, then soft targets); here the hint term joins the task loss in
one stage, as the toolkit's other distillers do, so ``hint`` slots into the same protocol and benchmarks.
The regressor trains with the student and is dropped afterwards: the student keeps its architecture.

The plugin is the loss and the regressor. It declares the layer it reads (``feature_layers``, resolved
from ``layer`` in ``setup``); occlusion-distill's trainer hooks that layer in both networks, runs the
teacher on each batch (its feature map is needed at every step, not only its outputs), hands the maps
to ``compute_loss`` in ``ModelOutput.features`` and removes the hooks when the stage ends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F

from occlusion_distill.distillers import Distiller, feature_maps
from occlusion_distill.errors import RunFailed, UsageError

if TYPE_CHECKING:
    from occlusion_distill.models.network import ModelOutput
    from occlusion_distill.tasks.base import Task

__version__ = "0.1.0"
__all__ = ["HintDistiller", "feature_maps", "middle_layer"]


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

    teacher_outputs = "online"  # the teacher's feature map at every step, not a table of its outputs

    def __init__(self, task: "Task", lambda_: float = 1.0, layer: str = "auto"):
        super().__init__(task)
        if isinstance(lambda_, bool) or not isinstance(lambda_, (int, float)) or not 0 <= lambda_ < float("inf"):
            raise UsageError(f"hint: lambda must be a finite number >= 0, not {lambda_!r}")
        if not isinstance(layer, str) or not layer:
            raise UsageError(f"hint: layer must be a module name of the backbone, or auto, not {layer!r}")
        self.lambda_ = float(lambda_)
        self.layer = layer
        self.regressor: nn.Module | None = None

    def hparams(self) -> dict[str, object]:
        return {"lambda": self.lambda_, "layer": self.layer}  # the settings hint has always recorded

    def setup(self, student: nn.Module, teacher: nn.Module | None, example: torch.Tensor) -> None:
        """Resolve ``layer`` (``auto``: the teacher's middle layer) into ``feature_layers`` and build the
        1x1 regressor from the student's channels to the teacher's; ``UsageError`` for a layer that is not
        a 4-D output of both backbones."""
        s_net, t_net = getattr(student, "backbone", student), getattr(teacher, "backbone", teacher)
        maps_of = {"student": dict(feature_maps(s_net, example)), "teacher": dict(feature_maps(t_net, example))}
        name = _middle(list(maps_of["teacher"].items())) if self.layer == "auto" else self.layer
        for role, maps in maps_of.items():
            if name not in maps:
                raise UsageError(f"hint: the {role} backbone has no layer '{name}' with a 4-D output; "
                                 f"layers: {', '.join(list(maps)[-12:])}")
        self.feature_layers = (name,)
        # a fresh regressor per stage: one stage's fit must not warm-start another's (a resumed stage loads its own)
        self.regressor = nn.Conv2d(maps_of["student"][name][1], maps_of["teacher"][name][1], kernel_size=1, bias=False)

    def compute_loss(self, student: "ModelOutput", targets: torch.Tensor,
                     teacher: "ModelOutput | None") -> dict[str, torch.Tensor]:
        task_loss = self.task.loss(student.logits, targets)
        name = self.feature_layers[0] if self.feature_layers else None
        s = (student.features or {}).get(name)
        t = (teacher.features or {}).get(name)
        if s is None or t is None or self.regressor is None:
            raise RunFailed("hint: no feature maps reached the loss; train it through the stage (ctx.fit), which "
                            "calls setup() and passes the maps of feature_layers")
        if s.shape[-2:] != t.shape[-2:]:
            s = F.adaptive_avg_pool2d(s, t.shape[-2:])
        hint = F.mse_loss(self.regressor(s).float(), t.detach().float())
        return {"loss": task_loss + self.lambda_ * hint, "task": task_loss, "hint": hint}
