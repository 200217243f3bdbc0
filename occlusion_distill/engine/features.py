"""The feature maps a distiller declares (``Distiller.feature_layers``), taken from inside the networks.

The trainer owns the forward hooks, as torchdistill's io-dicts do: it registers them for a stage, hands
the maps of each training step to the loss in ``ModelOutput.features``, and removes them when the stage
ends, however it ends. A distiller never hooks a module itself.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn

from ..errors import UsageError


class FeatureTap:
    """Forward hooks on the layers ``names`` (module names within ``model.backbone``, or within the model
    when it has no backbone) of the student and, when given, the teacher.

    The student's maps are kept only from passes in training mode (its validation passes are no training
    step); the teacher's from every pass, since it runs in eval mode. ``take(role)`` hands over and forgets
    what the last pass left. Use it as a context manager, or call ``remove``. Raises ``UsageError`` for a
    name that is not a module of the backbone.
    """

    def __init__(self, names: Sequence[str], student: nn.Module, teacher: nn.Module | None = None):
        self.names = tuple(names)
        self.maps: dict[str, dict[str, torch.Tensor]] = {"student": {}, "teacher": {}}
        self._handles: list[Any] = []
        try:
            for role, model in (("student", student), ("teacher", teacher)):
                if model is None:
                    continue
                modules = dict(getattr(model, "backbone", model).named_modules())
                for name in self.names:
                    if not name or name not in modules:
                        raise UsageError(f"feature layer '{name}': the {role} backbone has no such module "
                                         f"(some of its modules: {', '.join(list(modules)[-8:])})")
                    self._handles.append(modules[name].register_forward_hook(self._keep(role, name)))
        except BaseException:
            self.remove()
            raise

    def _keep(self, role: str, name: str):
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            if role == "teacher" or module.training:
                self.maps[role][name] = output
        return hook

    def take(self, role: str) -> dict[str, torch.Tensor]:
        maps, self.maps[role] = self.maps[role], {}
        return maps

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self.maps = {"student": {}, "teacher": {}}

    def __enter__(self) -> "FeatureTap":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()
