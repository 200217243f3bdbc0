"""The built-in tasks: expression, gender and age."""

from __future__ import annotations

import numpy as np

from ..registry import tasks
from .base import ClassificationTask, RegressionTask, macro_f1

# Errors within this many years are squared, larger ones count linearly; chosen on UTKFace validation
# faces against l1 and the old threshold of one standard deviation (about 20 years): docs/age-loss.md.
AGE_HUBER_YEARS = 5.0


@tasks.register("expression")
class Expression(ClassificationTask):
    """Facial expression classification (FER2013: 7 classes, FER+: 8); accuracy and macro-F1."""

    name = "expression"
    label = "expression"

    def metrics(self, outputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        return {**super().metrics(outputs, targets),
                "macro_f1": macro_f1(outputs.argmax(axis=1), self.hard(targets), self.output_dim)}


@tasks.register("gender")
class Gender(ClassificationTask):
    """Gender classification (2 classes); accuracy."""

    name = "gender"
    label = "gender"


@tasks.register("age")
class Age(RegressionTask):
    """Age regression in years; mean absolute error (lower is better)."""

    name = "age"
    label = "age"
    unit = " years"

    def __init__(self, loss: str = "huber", delta: float = AGE_HUBER_YEARS) -> None:
        """``loss``: huber, l1 or mse; ``delta``: the huber threshold in years (see docs/age-loss.md)."""
        super().__init__(loss, delta)
