"""``none``, ``lower-half`` and ``upper-half``: the ICPR 2020 setting, split at the face's landmarks.

The split line runs parallel to the eye line (so it follows head roll) through the point ``split`` of
the way from the eyes' midpoint to the nose tip: with the default 0.5 it passes between the eyes and
the nose tip, so ``lower-half`` hides nose and mouth (as a mask does) and ``upper-half`` hides eyes and
brows (as a VR headset does).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .base import Occlusion, check_number
from .regions import FaceFrame


def face_axes(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors along the eye line and down the face (towards the mouth), for any roll or flip."""
    frame = FaceFrame.from_landmarks(landmarks)
    return frame.across, frame.down


class NoOcclusion(Occlusion):
    """Nothing hidden: the clean face (reference and sanity check)."""

    def coverage(self, shape: tuple[int, int], **params: Any) -> np.ndarray:
        return np.zeros(shape[:2], dtype=bool)

    def draw(self, image: np.ndarray, **params: Any) -> np.ndarray:
        return image


class _Half(Occlusion):
    hide_below = True

    def __init__(self, split: float = 0.5, fill: int | Sequence[int] = 0, p: float = 1.0,
                 fill_mask: float | Sequence[float] | None = None):
        super().__init__(fill=fill, p=p, fill_mask=fill_mask)
        self.split = check_number(split, "split", -1.0, 2.0, plugin="lower-half" if self.hide_below else "upper-half",
                                  unit="0 = eye line, 1 = nose tip")

    def sample(self, landmarks: np.ndarray, shape: tuple[int, int]) -> dict[str, Any]:
        _, down = face_axes(landmarks)
        eyes = landmarks[:2].mean(axis=0)
        depth = float(np.dot(landmarks[2] - eyes, down))
        point = eyes + down * depth * self.split
        return {"point": point.astype(np.float64), "normal": down}

    def coverage(self, shape: tuple[int, int], point=None, normal=None, **params: Any) -> np.ndarray:
        h, w = shape[:2]
        # Pixel centres at +0.5: a pixel is hidden when its centre lies past the line. The signed
        # distance is linear in x and y: an outer sum of two 1-D ramps, no coordinate grid.
        side = ((np.arange(h) + (0.5 - point[1])) * normal[1])[:, None] + \
            ((np.arange(w) + (0.5 - point[0])) * normal[0])[None, :]
        return side > 0 if self.hide_below else side <= 0


class LowerHalf(_Half):
    """Hides the lower half of the face (nose and mouth): only eyes and brows stay visible."""

    hide_below = True


class UpperHalf(_Half):
    """Hides the upper half of the face (eyes and brows): only nose and mouth stay visible."""

    hide_below = False
