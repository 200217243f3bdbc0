"""Rasterising occluders inside their bounding box only, so per-face cost does not grow with the image.

Per-face cost is dominated by Python and small-array overhead, not pixels (a 112 px face has a few
thousand occluder pixels), so shapes are mapped to pixels in one matrix product, converted to cv2's
fixed-point coordinates in one go, and drawn with as few cv2 calls as possible.
"""

from __future__ import annotations

import cv2
import numpy as np

_SHIFT = 4  # sub-pixel precision of cv2's drawing: coordinates in 1/16 px
_SCALE = float(1 << _SHIFT)


def bbox(points: np.ndarray, shape: tuple[int, int], pad: int = 1) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1) of the points' pixels clipped to the image, or None when all lie outside."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    h, w = shape[:2]
    lo = pts.min(axis=0)
    hi = pts.max(axis=0)
    x0, y0 = max(int(np.floor(lo[0])) - pad, 0), max(int(np.floor(lo[1])) - pad, 0)
    x1, y1 = min(int(np.ceil(hi[0])) + pad, w), min(int(np.ceil(hi[1])) + pad, h)
    if x0 >= x1 or y0 >= y1:
        return None
    return y0, y1, x0, x1


class Crop:
    """A bounding box of the image to draw into, and the conversion of pixel points to it."""

    def __init__(self, box: tuple[int, int, int, int]):
        self.box = box
        y0, y1, x0, x1 = box
        self.shape = (y1 - y0, x1 - x0)
        # cv2 puts pixel centres at integers; ours are at +0.5
        self._offset = np.array([x0 + 0.5, y0 + 0.5])

    def fixed(self, points: np.ndarray) -> np.ndarray:
        """Pixel (x, y) points of the whole image -> int32 crop coordinates in cv2's fixed point."""
        return np.rint((points - self._offset) * _SCALE).astype(np.int32)

    def alpha(self) -> np.ndarray:
        return np.zeros(self.shape, dtype=np.uint8)


def fill(out: np.ndarray, polygons: list[np.ndarray], value, antialias: bool = True) -> np.ndarray:
    """Fill fixed-point polygons (from ``Crop.fixed``) into ``out``."""
    for p in polygons:  # one call per polygon: cv2 fills overlaps of contours given together as holes
        cv2.fillPoly(out, [p], value, lineType=cv2.LINE_AA if antialias else cv2.LINE_8, shift=_SHIFT)
    return out


def lines(out: np.ndarray, polylines: list[np.ndarray], value, thickness: int, closed: bool = False) -> None:
    """Draw fixed-point polylines (from ``Crop.fixed``) into ``out``, anti-aliased."""
    if not polylines:
        return
    cv2.polylines(out, polylines, closed, value, thickness=max(1, int(thickness)), lineType=cv2.LINE_AA,
                  shift=_SHIFT)


def full_mask(shape: tuple[int, int], box: tuple[int, int, int, int] | None, crop: np.ndarray | None) -> np.ndarray:
    """The whole-image boolean mask of the pixels a crop's alpha touches (anti-aliased rims count)."""
    mask = np.zeros(shape[:2], dtype=bool)
    if box is not None and crop is not None:
        y0, y1, x0, x1 = box
        mask[y0:y1, x0:x1] = crop > 0
    return mask


def lit_layer(crop: Crop, colour, y_start: float, y_end: float, strength: float) -> np.ndarray:
    """An RGB uint8 layer of ``colour`` lit from above: (1 + strength) x at row ``y_start``, (1 - strength) x at ``y_end``.

    Light comes from above in the image (the world), not the face, so the layer is a stack of uniform
    rows: one small (rows, 3) computation repeated across the crop.
    """
    y0, y1, x0, x1 = crop.box
    k = (np.arange(y0, y1, dtype=np.float32) + (0.5 - y_start)) * (1.0 / max(y_end - y_start, 1e-6))
    np.clip(k, 0.0, 1.0, out=k)
    rows = ((1.0 + strength) - (2.0 * strength) * k)[:, None] * np.asarray(colour, dtype=np.float32)
    np.minimum(rows, 255.0, out=rows)
    # a nearest-neighbour resize is the fastest way to repeat a column across the crop
    return cv2.resize(rows.astype(np.uint8)[:, None, :], (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST)


def solid_layer(crop: Crop, colour) -> np.ndarray:
    """An RGB uint8 layer of one colour (a tiled row: much faster than broadcasting a 3-tuple)."""
    h, w = crop.shape
    row = np.tile(np.asarray(colour, dtype=np.uint8), w)
    return np.repeat(row[None], h, axis=0).reshape(h, w, 3)


def paint(image: np.ndarray, box: tuple[int, int, int, int] | None, alpha: np.ndarray | None,
          layer: np.ndarray | None) -> np.ndarray:
    """Blend an RGB uint8 layer into a copy of the image where alpha (uint8, 0-255) is set; grey gets luminance."""
    out = image.copy()
    if box is None or alpha is None:
        return out
    y0, y1, x0, x1 = box
    region = out[y0:y1, x0:x1]
    weight = alpha.astype(np.float32)
    weight *= 1.0 / 255.0
    if region.ndim == 2 or region.shape[-1] == 1:
        grey = cv2.cvtColor(np.ascontiguousarray(layer), cv2.COLOR_RGB2GRAY)
        src = region if region.ndim == 2 else region[..., 0]
        src[...] = cv2.blendLinear(grey, np.ascontiguousarray(src), weight, 1.0 - weight)
    else:
        region[...] = cv2.blendLinear(np.ascontiguousarray(layer), np.ascontiguousarray(region), weight,
                                      1.0 - weight)
    return out
