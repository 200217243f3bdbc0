"""``FaceSet``: the in-memory (or memory-mapped) form every data set plugin returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import DataError


@dataclass
class FaceSet:
    """Aligned faces of one split.

    images: (N, H, W, C) uint8, C = 1 or 3. landmarks: (N, 5, 2) float32 pixel (x, y) in MTCNN order.
    labels: name -> (N,) array (int64 class ids, or float32 for regression targets such as age).
    classes: label name -> class names, for the classification labels.
    """

    images: np.ndarray
    landmarks: np.ndarray
    labels: dict[str, np.ndarray]
    classes: dict[str, list[str]] = field(default_factory=dict)
    name: str = ""

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.ndim != 4 or self.images.dtype != np.uint8 or self.images.shape[-1] not in (1, 3):
            raise DataError(f"{self.name or 'data set'}: images must be (N, H, W, 1|3) uint8, "
                            f"got {self.images.shape} {self.images.dtype}")
        if self.landmarks.shape != (n, 5, 2):
            raise DataError(f"{self.name or 'data set'}: landmarks must be ({n}, 5, 2), got {self.landmarks.shape}")
        for key, value in self.labels.items():
            if len(value) != n:
                raise DataError(f"{self.name or 'data set'}: label '{key}' has {len(value)} values for {n} images")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[1])

    @property
    def channels(self) -> int:
        return int(self.images.shape[-1])

    def subset(self, index: np.ndarray) -> "FaceSet":
        return FaceSet(self.images[index], self.landmarks[index],
                       {k: v[index] for k, v in self.labels.items()}, self.classes, self.name)
