"""Shapes in face units placed on an image together, for occluders fitted by landmarks (``mask``, ``vr-headset``).

Shapes are defined in the face frame of ``regions.FaceFrame`` (eye midpoint origin, eye line axis,
inter-ocular distance as unit), so they follow head roll and scale; ``Shapes.place`` maps them all to
pixels in one matrix product and one fixed-point conversion, for OpenCV's drawing functions.
"""

from __future__ import annotations

import math

import numpy as np

from . import raster
from .regions import FaceFrame

_T = np.linspace(0.0, 1.0, 9)[:, None]
_BOW = 4.0 * _T * (1.0 - _T)


def arc_points(specs: list[tuple[tuple[float, float], tuple[float, float], float]]) -> np.ndarray:
    """(k, 9, 2) points of k arcs, each from p0 to p1 bowed by ``bulge`` (face units) to the right of travel."""
    rows = []
    for (x0, y0), (x1, y1), bulge in specs:
        dx, dy = x1 - x0, y1 - y0
        b = bulge / (math.hypot(dx, dy) + 1e-9)
        rows.append((x0, y0, dx, dy, -dy * b, dx * b))
    a = np.array(rows)[:, None, :]
    return a[..., 0:2] + _T * a[..., 2:4] + _BOW * a[..., 4:6]


class Shapes:
    """Named polylines in face units, mapped to pixels together: one matrix product, one fixed-point conversion."""

    def __init__(self) -> None:
        self.parts: list[np.ndarray] = []
        self.names: list[str] = []

    def add(self, name: str, uv) -> None:
        self.parts.append(np.asarray(uv, dtype=np.float64))
        self.names.append(name)

    def place(self, frame: FaceFrame, shape: tuple[int, int], outer: tuple[str, ...]) -> "Placed | None":
        """Pixel positions, and the crop around the parts named in ``outer`` (None when off the image)."""
        px = frame.to_image(np.concatenate(self.parts))
        ends = np.cumsum([len(p) for p in self.parts]).tolist()
        spans = list(zip(self.names, [0] + ends[:-1], ends))
        rim = np.concatenate([px[a:b] for n, a, b in spans if n in outer])
        box = raster.bbox(rim, shape)
        if box is None:
            return None
        crop = raster.Crop(box)
        return Placed(crop, px, crop.fixed(px), spans)


class Placed:
    """Shapes placed on one image: fixed-point crop coordinates by name, for cv2."""

    def __init__(self, crop: raster.Crop, px: np.ndarray, fixed: np.ndarray, spans: list[tuple[str, int, int]]):
        self.crop = crop
        self.px = px
        self.spans = {name: (a, b) for name, a, b in spans}
        self.parts: dict[str, list[np.ndarray]] = {}
        for name, a, b in spans:
            self.parts.setdefault(name, []).append(fixed[a:b])

    def pixels(self, name: str) -> np.ndarray:
        """Whole-image pixel coordinates of a part (its last occurrence)."""
        a, b = self.spans[name]
        return self.px[a:b]

    def __getitem__(self, name: str) -> list[np.ndarray]:
        return self.parts.get(name, [])


def tones(colour: np.ndarray, scales: np.ndarray, offsets: np.ndarray) -> list[tuple[int, int, int]]:
    """Darker/lighter versions of a colour (one row per scale and offset) as cv2 colour tuples."""
    return [tuple(t) for t in np.clip(colour[None] * scales[:, None] + offsets[:, None], 0, 255).astype(int).tolist()]
