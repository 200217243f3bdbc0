"""``gender``: gender classification; accuracy."""

from __future__ import annotations

from .base import ClassificationTask


class Gender(ClassificationTask):
    """Gender classification (2 classes); accuracy."""

    name = "gender"
    label = "gender"
