"""``expression``: facial expression classification; accuracy and macro-F1."""

from __future__ import annotations

import numpy as np

from .base import ClassificationTask, macro_f1


class Expression(ClassificationTask):
    """Facial expression classification (FER2013: 7 classes, FER+: 8); accuracy and macro-F1."""

    name = "expression"
    label = "expression"

    def metrics(self, outputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        return {**super().metrics(outputs, targets),
                "macro_f1": macro_f1(outputs.argmax(axis=1), self.hard(targets), self.output_dim)}
