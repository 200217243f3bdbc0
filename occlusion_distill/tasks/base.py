"""``Task``: what is predicted from a face, its head size, loss, metrics and better direction."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..data.faceset import FaceSet
from ..errors import DataError, OccdistillError, UsageError


class _DefaultName:
    """``Task.name`` for a subclass that sets none: the name its class is registered under (what the user
    typed after ``--task``), else the class name in lower case."""

    def __get__(self, task: "Task | None", cls: type) -> str:
        # Read on the class (as the registry's bare decorator does while registering it) there is no
        # registered name yet, and looking one up could import plugins in the middle of an import.
        if task is not None:
            from ..registry import tasks

            try:
                names = sorted(entry.name for entry in tasks.entries() if entry.obj is cls)
            except OccdistillError:  # a plugin clash: it is reported where a task is looked up, not here
                names = []
            if names:
                return names[0]
        return cls.__name__.lower()


class Task:
    """Base class of task plugins. ``label`` names the data set label the task reads; ``name`` (set it,
    or the registered name is used) is how error messages call the task."""

    name: str = _DefaultName()  # type: ignore[assignment]
    label: str = ""
    regression: bool = False
    metric: str = ""
    higher_is_better: bool = True
    unit: str = ""

    def __init__(self) -> None:
        self.output_dim = 0

    def setup(self, train: FaceSet) -> "Task":
        """Fit what the task needs from the training split (class count, target scale)."""
        if self.label not in train.labels:
            have = ", ".join(sorted(train.labels)) or "none"
            raise DataError(f"task '{self.name}' needs '{self.label}' labels, but data set "
                            f"'{train.name}' has only: {have}")
        return self

    def targets(self, faces: FaceSet) -> np.ndarray:
        return faces.labels[self.label]

    def state(self) -> dict[str, Any]:
        """What a trained model needs besides weights to be used again (stored in checkpoints)."""
        return {"output_dim": self.output_dim}

    def settings(self) -> dict[str, Any]:
        """The options that change what a model learns (JSON values): they are part of the cache keys of
        trained teachers and students, so that a model trained under other options is never reused."""
        return {}

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def metrics(self, outputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        """Metrics over a whole split; ``self.metric`` is the primary one."""
        raise NotImplementedError

    #: what ``per_face`` returns: "correct" (bool per face, compared by McNemar's test) or "abs_error"
    #: (float per face in the label's unit, compared by the Wilcoxon signed-rank test); "" for none
    per_face_kind: str = ""

    def per_face(self, outputs: np.ndarray, targets: np.ndarray) -> np.ndarray | None:
        """(N,) per-face outcome behind the primary metric, for paired tests on the same faces; None (the
        default) when the task has none, and the summaries then show only the across-seed test."""
        return None


class ClassificationTask(Task):
    metric = "accuracy"
    higher_is_better = True
    unit = "%"

    def __init__(self, num_classes: int | None = None) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.class_names: list[str] = []

    def setup(self, train: FaceSet) -> "ClassificationTask":
        super().setup(train)
        names = train.classes.get(self.label)
        found = len(names) if names else int(train.labels[self.label].max()) + 1
        if self.num_classes is not None and self.num_classes != found:
            raise DataError(f"task '{self.name}' was asked for {self.num_classes} classes, "
                            f"but data set '{train.name}' has {found}")
        self.num_classes = found
        self.class_names = list(names) if names else [str(i) for i in range(found)]
        labels = train.labels[self.label]
        if labels.min() < 0 or labels.max() >= found:
            raise DataError(f"'{self.label}' labels of '{train.name}' must lie in 0..{found - 1}, "
                            f"found {labels.min()}..{labels.max()}")
        self.output_dim = found
        return self

    def state(self) -> dict[str, Any]:
        return {"output_dim": self.output_dim, "class_names": self.class_names}

    def targets(self, faces: FaceSet) -> np.ndarray:
        """Class ids; or, where the data set gives a distribution per face (``<label>_probs``, e.g. FER+ in
        probability mode), that distribution, a soft target for the cross-entropy."""
        soft = faces.labels.get(f"{self.label}_probs")
        return soft.astype(np.float32) if soft is not None else faces.labels[self.label]

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if targets.ndim == 2:  # soft targets: cross-entropy against the distribution
            return F.cross_entropy(outputs, targets.float())
        return F.cross_entropy(outputs, targets.long())

    @staticmethod
    def hard(targets: np.ndarray) -> np.ndarray:
        """Class ids of targets that may be distributions (scored against their most likely class)."""
        return targets.argmax(axis=1) if targets.ndim == 2 else targets

    def metrics(self, outputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        pred = outputs.argmax(axis=1)
        return {"accuracy": 100.0 * float((pred == self.hard(targets)).mean())}

    per_face_kind = "correct"

    def per_face(self, outputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """(N,) bool: the most likely class is the target's (its most likely class for a distribution)."""
        return outputs.argmax(axis=1) == self.hard(targets)


def macro_f1(pred: np.ndarray, targets: np.ndarray, num_classes: int) -> float:
    """Mean F1 over the classes present in targets or predictions, in percent."""
    scores = []
    for c in range(num_classes):
        tp = int(((pred == c) & (targets == c)).sum())
        fp = int(((pred == c) & (targets != c)).sum())
        fn = int(((pred != c) & (targets == c)).sum())
        if tp + fp + fn == 0:
            continue
        scores.append(2 * tp / (2 * tp + fp + fn))
    return 100.0 * float(np.mean(scores)) if scores else 0.0


class RegressionTask(Task):
    """Predicts one number; the network works in standardised units fitted on the training split.

    ``loss``: ``huber`` (quadratic within ``delta`` of the target, linear beyond), ``l1`` or ``mse``.
    ``delta`` is in the label's own unit (years for age) and is converted through the training split's
    standard deviation; None (the base class's default, kept so that third-party regression tasks train as
    before) is one standard deviation. The huber loss is written as smooth L1, so beyond ``delta`` its
    slope is l1's whatever ``delta`` is. Raises ``UsageError`` for another loss or a ``delta`` that is not
    positive.
    """

    regression = True
    metric = "mae"
    higher_is_better = False
    LOSSES = ("huber", "l1", "mse")

    def __init__(self, loss: str = "huber", delta: float | None = None) -> None:
        super().__init__()
        if loss not in self.LOSSES:
            raise UsageError(f"task '{self.name}': loss must be one of {', '.join(self.LOSSES)}, not '{loss}'")
        if delta is not None and (isinstance(delta, bool) or not isinstance(delta, (int, float))
                                  or not delta > 0 or not np.isfinite(delta)):
            raise UsageError(f"task '{self.name}': delta must be a positive number (in the label's unit), "
                             f"not {delta!r}")
        self.loss_name = loss
        self.delta = None if delta is None else float(delta)
        self.output_dim = 1
        self.mean = 0.0
        self.std = 1.0

    def setup(self, train: FaceSet) -> "RegressionTask":
        super().setup(train)
        values = train.labels[self.label].astype(np.float64)
        if not np.isfinite(values).all():
            raise DataError(f"'{self.label}' labels of '{train.name}' contain NaN or infinite values")
        self.mean = float(values.mean())
        self.std = float(values.std()) or 1.0
        return self

    def state(self) -> dict[str, Any]:
        return {"output_dim": 1, "mean": self.mean, "std": self.std}

    def settings(self) -> dict[str, Any]:
        return {"loss": self.loss_name, **({"delta": self.delta} if self.loss_name == "huber" else {})}

    def normalise(self, targets: torch.Tensor) -> torch.Tensor:
        return (targets.float() - self.mean) / self.std

    def decode(self, outputs: np.ndarray) -> np.ndarray:
        return outputs.reshape(-1) * self.std + self.mean

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean loss of (N, 1) outputs in standardised units against (N,) targets in the label's unit."""
        pred, target = outputs.reshape(-1), self.normalise(targets)
        if self.loss_name == "l1":
            return F.l1_loss(pred, target)
        if self.loss_name == "mse":
            return F.mse_loss(pred, target)
        return F.smooth_l1_loss(pred, target, beta=1.0 if self.delta is None else self.delta / self.std)

    def metrics(self, outputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        err = self.decode(outputs) - targets.astype(np.float64)
        return {"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err ** 2).mean()))}

    per_face_kind = "abs_error"

    def per_face(self, outputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """(N,) float32: the absolute error in the label's unit."""
        return np.abs(self.decode(outputs) - targets.astype(np.float64)).astype(np.float32)
