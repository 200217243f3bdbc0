"""Occlusion plugins: albumentations transforms placed by the face's landmarks."""

from .base import Occlusion, landmarks_from
from .halves import LowerHalf, NoOcclusion, UpperHalf, face_axes
from .patches import RandomPatch
from .regions import REGIONS, FaceFrame, coverage_by_region, region_masks
from .mask import SurgicalMask
from .vr_headset import VRHeadset

__all__ = ["Occlusion", "landmarks_from", "NoOcclusion", "LowerHalf", "UpperHalf", "face_axes", "REGIONS",
           "FaceFrame", "coverage_by_region", "region_masks", "SurgicalMask", "VRHeadset",
           "RandomPatch"]
