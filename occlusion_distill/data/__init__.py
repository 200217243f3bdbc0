"""Data set plugins, the FaceSet container and paired clean/occluded views."""

from .base import SPLITS, FaceDataset
from .builtin import SynthFaces
from .faceset import FaceSet
from .paired import PairedFaces, occlude_all, to_tensor

__all__ = ["SPLITS", "FaceDataset", "FaceSet", "SynthFaces", "PairedFaces", "occlude_all", "to_tensor"]
