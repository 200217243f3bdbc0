"""Data set plugins, the FaceSet container and paired clean/occluded views."""

from .affectnet import AffectNet
from .base import SPLITS, FaceDataset
from .synthfaces import SynthFaces
from .faceset import FaceSet
from .fer import FER2013, FERPlus
from .paired import PairedFaces, occlude_all, to_tensor
from .prepared import PreparedDataset
from .userdata import CSVData, FolderData
from .utkface import UTKFace

__all__ = ["SPLITS", "FaceDataset", "FaceSet", "SynthFaces", "PairedFaces", "occlude_all", "to_tensor",
           "PreparedDataset", "FERPlus", "FER2013", "UTKFace", "FolderData", "CSVData", "AffectNet"]
