"""Task plugins: what is predicted, with which loss and metrics."""

from .base import ClassificationTask, RegressionTask, Task, macro_f1
from .builtin import Age, Expression, Gender

__all__ = ["Task", "ClassificationTask", "RegressionTask", "macro_f1", "Expression", "Gender", "Age"]
