"""``random-patch``: random rectangles placed in the face frame, a landmark-aware relative of CoarseDropout.

albumentations' ``CoarseDropout`` drops holes anywhere in the image, so a hole may land on the
background. Here the patches' centres fall inside the face (from the brows to the chin, in the face
frame of ``regions.FaceFrame``), their sides are in inter-ocular units and they turn with the head, so
the same settings hide a comparable share of any face at any size or roll.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import UsageError
from . import raster
from .base import Occlusion, Rendered, check_fill, check_number
from .regions import FaceFrame

#: where patch centres fall, in face units: u across (eye to eye = 1), v down (eyes at 0, mouth near 1)
FACE_BOX = ((-0.9, 0.9), (-0.7, 1.6))


def _pair(value: Any, name: str, integer: bool, lo: float, hi: float, unit: str = "") -> tuple:
    """A (low, high) range, or one value meaning (value, value), checked against [lo, hi]."""
    pair = tuple(value) if isinstance(value, (list, tuple)) else (value, value)
    if len(pair) != 2:
        raise UsageError(f"random-patch: {name} must be one value or a (low, high) pair, not {value!r}")
    low, high = (check_number(v, name, lo, hi, plugin="random-patch", integer=integer, unit=unit) for v in pair)
    if low > high:
        raise UsageError(f"random-patch: {name} must be a (low, high) pair with low <= high, not {value!r}")
    return low, high


class RandomPatch(Occlusion):
    """Random rectangles inside the face, sized in eye distances and turned with the head (CoarseDropout's cousin)."""

    def __init__(self, num_patches: int | Sequence[int] = (1, 3), size: float | Sequence[float] = (0.4, 0.9),
                 fill: str | int | Sequence[int] = "random", p: float = 1.0,
                 fill_mask: float | Sequence[float] | None = None):
        super().__init__(p=p, fill_mask=fill_mask)
        self.num_patches = _pair(num_patches, "num_patches", True, 1, 32)
        self.size = _pair(size, "size", False, 0.05, 4.0, unit="eye distances")
        self.fill = fill if fill == "random" else check_fill(fill)
        if isinstance(self.fill, tuple) and len(self.fill) not in (1, 3):
            raise UsageError(f"random-patch: fill needs 1 value or 3 (RGB), not {fill!r}")

    def sample(self, landmarks: np.ndarray, shape: tuple[int, int]) -> dict[str, Any]:
        rng = self.random_generator
        k = int(rng.integers(self.num_patches[0], self.num_patches[1] + 1))
        r = rng.random((k, 7))
        (u0, u1), (v0, v1) = FACE_BOX
        centre = np.stack([u0 + (u1 - u0) * r[:, 0], v0 + (v1 - v0) * r[:, 1]], axis=1)
        half = (self.size[0] + (self.size[1] - self.size[0]) * r[:, 2:4]) / 2
        colours = np.floor(r[:, 4:7] * 256).clip(0, 255) if self.fill == "random" else None
        return {"frame": FaceFrame.from_landmarks(landmarks), "centre": centre, "half": half, "colours": colours}

    _CORNERS = np.array([(-1.0, -1.0), (1.0, -1.0), (1.0, 1.0), (-1.0, 1.0)])

    def _placed(self, shape: tuple[int, int], params: dict[str, Any]):
        uv = params["centre"][:, None, :] + self._CORNERS[None] * params["half"][:, None, :]
        px = params["frame"].to_image(uv.reshape(-1, 2))
        box = raster.bbox(px, shape)
        if box is None:
            return None, []
        crop = raster.Crop(box)
        return crop, list(crop.fixed(px).reshape(-1, 4, 2))

    def render(self, shape: tuple[int, int], **params: Any) -> Rendered:
        crop, rects = self._placed(shape, params)
        if crop is None:
            return None, None, None
        alpha = raster.fill(crop.alpha(), rects, 255, antialias=False)
        if params["colours"] is None:
            fill = self.fill if isinstance(self.fill, tuple) else (self.fill,)
            layer = raster.solid_layer(crop, fill * 3 if len(fill) == 1 else fill)
        else:
            layer = np.zeros((*crop.shape, 3), dtype=np.uint8)
            for rect, colour in zip(rects, params["colours"].tolist()):
                raster.fill(layer, [rect], colour, antialias=False)
        return crop.box, alpha, layer
