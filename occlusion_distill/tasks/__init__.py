"""Task plugins: what is predicted, with which loss and metrics."""

from .base import ClassificationTask, RegressionTask, Task, macro_f1
from .age import Age
from .expression import Expression
from .gender import Gender

__all__ = ["Task", "ClassificationTask", "RegressionTask", "macro_f1", "Expression", "Gender", "Age"]
