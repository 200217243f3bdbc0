"""Rasterising occluders inside their bounding box only, so per-face cost does not grow with the image."""

from __future__ import annotations

import cv2
import numpy as np

_SHIFT = 4  # sub-pixel precision of cv2's polygon filling: coordinates in 1/16 px


def bbox(polygons: list[np.ndarray], shape: tuple[int, int], pad: int = 1) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1) of the polygons' pixels clipped to the image, or None when all lie outside."""
    pts = np.concatenate([np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in polygons])
    h, w = shape[:2]
    x0, y0 = np.floor(pts.min(axis=0)).astype(int) - pad
    x1, y1 = np.ceil(pts.max(axis=0)).astype(int) + pad
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x0 >= x1 or y0 >= y1:
        return None
    return int(y0), int(y1), int(x0), int(x1)


def fill(polygons: list[np.ndarray], box: tuple[int, int, int, int], value: int = 255,
         out: np.ndarray | None = None, antialias: bool = True) -> np.ndarray:
    """Fill polygons (pixel coordinates of the whole image) into a uint8 crop of size ``box``."""
    y0, y1, x0, x1 = box
    if out is None:
        out = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
    # cv2 puts pixel centres at integers; ours are at +0.5
    pts = [np.round((np.asarray(p, dtype=np.float64) - [x0 + 0.5, y0 + 0.5]) * (1 << _SHIFT)).astype(np.int32)
           for p in polygons]
    for p in pts:  # one call per polygon: cv2 fills overlaps of contours given together as holes
        cv2.fillPoly(out, [p], value, lineType=cv2.LINE_AA if antialias else cv2.LINE_8, shift=_SHIFT)
    return out


def lines(points: list[np.ndarray], box: tuple[int, int, int, int], out: np.ndarray, value, thickness: int) -> None:
    """Draw open polylines (whole-image pixel coordinates) into a crop."""
    y0, y1, x0, x1 = box
    pts = [np.round((np.asarray(p, dtype=np.float64) - [x0 + 0.5, y0 + 0.5]) * (1 << _SHIFT)).astype(np.int32)
           for p in points]
    cv2.polylines(out, pts, False, value, thickness=max(1, thickness), lineType=cv2.LINE_AA, shift=_SHIFT)


def full_mask(shape: tuple[int, int], box: tuple[int, int, int, int] | None, crop: np.ndarray | None) -> np.ndarray:
    mask = np.zeros(shape[:2], dtype=bool)
    if box is not None and crop is not None:
        y0, y1, x0, x1 = box
        mask[y0:y1, x0:x1] = crop > 0  # anti-aliased rims count: every pixel the occluder touches
    return mask


def paint(image: np.ndarray, box: tuple[int, int, int, int] | None, alpha: np.ndarray | None,
          layer: np.ndarray | None) -> np.ndarray:
    """Blend an RGB uint8 layer into the image where alpha (uint8, 0-255) is set; grey images get luminance."""
    out = image.copy()
    if box is None or alpha is None:
        return out
    y0, y1, x0, x1 = box
    region = out[y0:y1, x0:x1]
    if region.ndim == 2 or region.shape[-1] == 1:
        grey = (layer.astype(np.uint16) * np.array([77, 150, 29], np.uint16)).sum(axis=-1) >> 8
        layer = grey.astype(np.uint8)[..., None]
    a = alpha.astype(np.uint16)[..., None]
    src = region.reshape(region.shape[0], region.shape[1], -1).astype(np.uint16)
    blended = (layer.astype(np.uint16) * a + src * (255 - a) + 127) // 255
    region[...] = blended.astype(np.uint8).reshape(region.shape)
    return out
