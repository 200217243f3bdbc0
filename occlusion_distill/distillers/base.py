"""``Distiller``: how a student learns on occluded faces, with or without a frozen clean-face teacher.

A distiller is an ``nn.Module`` so it may own parameters (a projection head, a regressor); they are
trained with the student. It writes one method, ``compute_loss(student, targets, teacher)``: the
student's output on the occluded faces, the targets, and the frozen teacher's output on the *clean*
version of the same faces in, named loss terms with the total under ``"loss"`` out. ``forward`` is the
template around it (as pytorch-metric-learning's ``BaseMetricLossFunction``): it checks the teacher is
there when needed, calls ``compute_loss``, checks the result and detaches the logged terms.

What a distiller needs beyond that it declares, and the engine provides and cleans up after:
``uses_teacher``, ``teacher_outputs`` ("cached" or "online"), ``feature_layers`` (the backbone layers
whose feature maps it reads, resolved per stage by ``setup``) and ``task_kinds``. ``train_student`` is
the whole stage; the default trains through the stage context (``ctx.fit(self)``), and a distiller
that needs another procedure (``combined``) overrides it.
"""

from __future__ import annotations

import copy
import functools
import inspect
import warnings
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from ..errors import PluginError, RunFailed, UsageError
from ..models.network import ModelOutput
from ..tasks.base import Task

if TYPE_CHECKING:
    from ..engine.stage import StageContext

TASK_KINDS = ("classification", "regression")


def task_kind(task: Task) -> str:
    """"regression" for a task with ``regression = True`` (age), "classification" otherwise."""
    return "regression" if getattr(task, "regression", False) else "classification"


class Distiller(nn.Module):
    """Base class of distiller plugins: subclass it and write ``compute_loss``.

    Declared on the class (or set by ``setup`` for one stage):

    - ``uses_teacher``: whether ``compute_loss`` gets the teacher's output (False: ``teacher`` is None).
    - ``teacher_outputs``: "cached" (the teacher's outputs may be computed once per face and flip and
      looked up: the run's ``--teacher-outputs`` decides) or "online" (the teacher must run on every
      batch). Declaring ``feature_layers`` implies "online".
    - ``feature_layers``: names of backbone modules (as ``model.backbone.named_modules()`` gives them)
      whose outputs ``compute_loss`` reads from ``student.features`` and ``teacher.features``.
    - ``task_kinds``: the task kinds it supports, of "classification" and "regression"; building it for
      another kind is a one-line ``UsageError``.
    - ``is_baseline``: True only for the protocol's baseline (``finetune``).
    - ``version``: bump when a change alters what given settings train. The default ``hparams()``
      records it; for an override, ``key_settings`` adds it to the cache key once it is above 1, so
      cached students of the old version are not reused either way.
    """

    uses_teacher: bool = True
    teacher_outputs: str = "cached"
    feature_layers: tuple[str, ...] = ()
    task_kinds: tuple[str, ...] = TASK_KINDS
    is_baseline: bool = False
    version: int = 1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        bad = [k for k in cls.task_kinds if k not in TASK_KINDS]
        if bad or not cls.task_kinds:
            raise PluginError(f"{cls.__name__}.task_kinds must name some of {', '.join(TASK_KINDS)}, "
                              f"not {cls.task_kinds!r}")
        if cls.teacher_outputs not in ("cached", "online"):
            raise PluginError(f"{cls.__name__}.teacher_outputs must be 'cached' or 'online', not {cls.teacher_outputs!r}")
        if "forward" in cls.__dict__ and "compute_loss" not in cls.__dict__:
            warnings.warn(f"{cls.__name__} overrides Distiller.forward: write compute_loss(student, targets, "
                          f"teacher) instead, and forward checks its inputs and result", DeprecationWarning,
                          stacklevel=2)
        if "__init__" in cls.__dict__:
            cls.__init__ = _recording_options(cls.__init__)

    def __init__(self, task: Task):
        super().__init__()
        kind = task_kind(task)
        if kind not in self.task_kinds:
            raise UsageError(f"{type(self).__name__} supports {' and '.join(self.task_kinds)} tasks; "
                             f"'{getattr(task, 'name', task)}' is a {kind} task")
        self.task = task

    # -- the loss -------------------------------------------------------------------------------------
    def compute_loss(self, student: ModelOutput, targets: torch.Tensor,
                     teacher: ModelOutput | None) -> dict[str, torch.Tensor]:
        """The loss of one training batch of B faces.

        ``student``: the student's ``ModelOutput`` on the occluded faces: ``logits`` (B, K) (for a
        regression task K = 1, the standardised value), ``embedding`` (B, D), and ``features`` when
        ``feature_layers`` are declared. ``targets``: (B,) int64 class indices, (B, K) float class
        distributions (soft labels), or (B,) float32 raw values (years for age; ``task.normalise``
        standardises them). ``teacher``: the frozen teacher's output on the clean faces, no gradient, or
        None when ``uses_teacher`` is False. Under ``--amp`` the logits are bf16 or fp16.

        Returns the named terms: a scalar tensor under ``"loss"`` that is backpropagated, and any other
        scalar tensors, whose means per epoch go into the history as ``train_<name>``.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement compute_loss(student, targets, teacher)")

    def forward(self, student: ModelOutput, targets: torch.Tensor,
                teacher: ModelOutput | None = None) -> dict[str, torch.Tensor]:
        """``compute_loss``, checked: ``RunFailed`` when the teacher is needed and missing, ``PluginError``
        when the result is not a dict of tensors with a scalar ``"loss"``. Terms other than ``"loss"``
        come back detached. No value is read back from the device (no host sync)."""
        if self.uses_teacher and teacher is None:
            raise RunFailed(f"{type(self).__name__} needs the teacher's outputs on the clean faces (uses_teacher "
                            f"is True) but got none")
        terms = self.compute_loss(student, targets, teacher)
        name = type(self).__name__
        if not isinstance(terms, dict) or not isinstance(terms.get("loss"), torch.Tensor):
            raise PluginError(f"{name}.compute_loss must return a dict with a tensor under 'loss', "
                              f"got {type(terms).__name__}")
        if terms["loss"].ndim != 0:
            raise PluginError(f"{name}.compute_loss: 'loss' must be a scalar tensor, got shape "
                              f"{tuple(terms['loss'].shape)}")
        for key, value in terms.items():
            if not isinstance(value, torch.Tensor) or value.numel() != 1:
                raise PluginError(f"{name}.compute_loss: term '{key}' must be a one-element tensor, got "
                                  f"{type(value).__name__}{tuple(getattr(value, 'shape', ()))}")
        return {k: v if k == "loss" else v.detach() for k, v in terms.items()}

    # -- the stage ------------------------------------------------------------------------------------
    def setup(self, student: nn.Module, teacher: nn.Module | None, example: torch.Tensor) -> None:
        """Called by the trainer at the start of each stage, before the optimiser is built, with the
        models on the stage's device and ``example``, two validation faces (2, C, H, W) there too.
        Build parameters that depend on the networks here (they train with the student) and resolve
        ``feature_layers``; raise ``UsageError`` for an option the networks cannot honour. Before any
        data is loaded, ``preflight`` also calls it once on a copy of the distiller, with untrained CPU
        networks of the run's backbone, so that such an error comes first. The default does nothing."""

    def hparams(self) -> dict[str, Any]:
        """The settings that define this distiller, for config.json and the cache key. The default: every
        ``__init__`` option as the distiller was built (defaults included; ``lambda_`` is recorded as
        ``lambda``), and ``version``. An override replaces it and must record every option itself (the
        framework adds ``version``: ``key_settings``)."""
        return {**getattr(self, "_init_options", {}), "version": self.version}

    def student_template(self, teacher: nn.Module) -> nn.Module:
        """An untrained model of the student's architecture (a cached student's weights are loaded into it)."""
        return copy.deepcopy(teacher)

    def train_student(self, ctx: "StageContext") -> nn.Module:
        """The whole stage: returns the trained student. The default is ``ctx.fit(self)``."""
        return ctx.fit(self)


def feature_maps(backbone: nn.Module, example: torch.Tensor) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every leaf module's 4-D output, in the order a forward pass of ``example``
    (B, C, H, W) produces them: the layers a distiller may name in ``feature_layers``. The backbone runs
    once in eval mode, without gradient; its hooks are removed and its mode restored."""
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


def key_settings(distiller: Distiller) -> dict[str, Any]:
    """``distiller.hparams()`` with its ``version`` when above 1 and the hparams leave it out, as
    config.json and the cache keys record it. The framework adds it, not the plugin: an ``hparams()``
    override that forgets it would otherwise let a bumped version reuse the old version's students.
    Version 1 is left out so that the keys of students cached before this rule stay as they were."""
    settings = distiller.hparams()
    if distiller.version != 1 and "version" not in settings:
        settings = {**settings, "version": distiller.version}
    return settings


def _recording_options(init: Any) -> Any:
    """Wrap a distiller's ``__init__`` so that the outermost call records its options (for ``hparams()``)."""
    signature = inspect.signature(init)

    @functools.wraps(init)
    def wrapper(self: Distiller, *args: Any, **kwargs: Any) -> None:
        if "_init_options" not in self.__dict__:
            object.__setattr__(self, "_init_options", _options(signature, self, args, kwargs))
        init(self, *args, **kwargs)

    return wrapper


def _options(signature: inspect.Signature, self: Any, args: tuple, kwargs: dict) -> dict[str, Any]:
    try:
        bound = signature.bind(self, *args, **kwargs)
    except TypeError:
        return {}  # the call itself fails in a moment, with Python's own message
    bound.apply_defaults()
    options: dict[str, Any] = {}
    for i, (name, value) in enumerate(bound.arguments.items()):
        kind = signature.parameters[name].kind
        if i == 0 or name == "task" or isinstance(value, Task):  # self, and the task the registry passes
            continue
        if kind is inspect.Parameter.VAR_KEYWORD:
            options.update({k.rstrip("_"): _plain(v) for k, v in value.items()
                            if k != "task" and not isinstance(v, Task)})
        elif kind is not inspect.Parameter.VAR_POSITIONAL:
            options[name.rstrip("_")] = _plain(value)
    return dict(sorted(options.items()))


def _plain(value: Any) -> Any:
    """Tuples as lists and numpy scalars as Python numbers, as JSON holds them."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        return value.item()
    return value


def split_replica(spec: str) -> tuple[str, int]:
    """``"kd"`` -> ("kd", 0); ``"finetune:1"`` -> ("finetune", 1). Raises ``UsageError`` for a replica
    that is not a whole number >= 1."""
    name, sep, replica = spec.partition(":")
    if not sep:
        return name, 0
    if not replica.isdigit() or int(replica) < 1:
        raise UsageError(f"'{spec}': a replica is NAME:K with K a whole number >= 1")
    return name, int(replica)
