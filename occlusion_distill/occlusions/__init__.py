"""Occlusion plugins: albumentations transforms placed by the face's landmarks."""

from .base import Occlusion, landmarks_from
from .halves import LowerHalf, NoOcclusion, UpperHalf, face_axes

__all__ = ["Occlusion", "landmarks_from", "NoOcclusion", "LowerHalf", "UpperHalf", "face_axes"]
