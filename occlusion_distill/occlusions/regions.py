"""The region model: approximate face regions derived from the 5 landmarks, in one documented place.

Everything is expressed in the *face frame*: origin at the midpoint of the eyes, ``u`` along the eye
line (image left to right), ``v`` down the face, and the unit is the inter-ocular distance (IOD), so
regions follow head roll and scale. Each region is an ellipse (centre, semi-axes in IOD units):

========  =====================================================  ==================
region    centre                                                 semi-axes (u, v)
========  =====================================================  ==================
brows     each eye, 0.32 IOD above it                            0.30, 0.12
eyes      each eye landmark                                      0.25, 0.14
nose      halfway from 0.3 of the way eyes->nose tip to the tip  0.18, half that span
mouth     the midpoint of the mouth corners                      half the mouth width + 0.05, 0.17
chin      0.45 IOD below the mouth midpoint                      0.40, 0.20
========  =====================================================  ==================

Occlusions place themselves with the same frame; ``bench occlusions`` and the tests measure how much
of each region an occlusion hides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

REGIONS = ("brows", "eyes", "nose", "mouth", "chin")


@dataclass(frozen=True)
class FaceFrame:
    """Face-aligned coordinates from 5 landmarks (MTCNN order, any roll, either flip)."""

    origin: np.ndarray  # eye midpoint, pixels
    across: np.ndarray  # unit vector along the eye line, image left -> right
    down: np.ndarray  # unit vector down the face
    iod: float  # inter-ocular distance, pixels
    landmarks: np.ndarray  # (5, 2)
    matrix: np.ndarray  # (2, 2): rows are ``across`` and ``down`` scaled by ``iod``; face -> pixel offsets

    @classmethod
    def from_landmarks(cls, landmarks: np.ndarray) -> "FaceFrame":
        lm = np.asarray(landmarks, dtype=np.float64)[:5, :2]
        (ax, ay), (bx, by) = lm[0].tolist(), lm[1].tolist()
        mx, my = (lm[3] + lm[4]).tolist()
        # "down" (the eye line turned 90 degrees) must point from the eyes to the mouth, whatever the roll
        # or flip: order the eyes so that it does.
        if (mx / 2 - (ax + bx) / 2) * (ay - by) + (my / 2 - (ay + by) / 2) * (bx - ax) < 0:
            ax, ay, bx, by = bx, by, ax, ay
        iod = math.hypot(bx - ax, by - ay)
        cx, cy = ((bx - ax) / iod, (by - ay) / iod) if iod > 1e-6 else (1.0, 0.0)
        iod = max(iod, 1e-6)
        return cls(np.array([(ax + bx) / 2, (ay + by) / 2]), np.array([cx, cy]), np.array([-cy, cx]), iod, lm,
                   np.array([[cx * iod, cy * iod], [-cy * iod, cx * iod]]))

    def to_face(self, xy: np.ndarray) -> np.ndarray:
        """Pixel (x, y) -> face (u, v) in IOD units."""
        return (np.asarray(xy, dtype=np.float64) - self.origin) @ self.matrix.T / (self.iod * self.iod)

    def to_image(self, uv: np.ndarray) -> np.ndarray:
        """Face (u, v) in IOD units -> pixel (x, y)."""
        return self.origin + np.asarray(uv, dtype=np.float64) @ self.matrix

    def landmarks_uv(self) -> np.ndarray:
        return self.to_face(self.landmarks)

    def pixel_uv(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """(u, v) of every pixel centre of an image of this shape."""
        h, w = shape[:2]
        # u and v are linear in x and y: outer sums of 1-D ramps, no per-pixel coordinate grid
        dx = (np.arange(w) + 0.5 - self.origin[0]) / self.iod
        dy = (np.arange(h) + 0.5 - self.origin[1]) / self.iod
        u = dy[:, None] * self.across[1] + dx[None, :] * self.across[0]
        v = dy[:, None] * self.down[1] + dx[None, :] * self.down[0]
        return u, v


def region_ellipses(frame: FaceFrame) -> dict[str, list[tuple[float, float, float, float]]]:
    """Each region as a list of ellipses (u_centre, v_centre, u_semi_axis, v_semi_axis) in IOD units."""
    lm = frame.landmarks_uv()
    eyes = lm[:2][np.argsort(lm[:2, 0])]
    nose = lm[2]
    mouth_l, mouth_r = sorted((lm[3], lm[4]), key=lambda p: p[0])
    mouth_c = (mouth_l + mouth_r) / 2
    mouth_half = float(np.hypot(*(mouth_r - mouth_l))) / 2
    nose_top = 0.3 * nose
    nose_c = (nose_top + nose) / 2
    nose_half = max(float(np.hypot(*(nose - nose_top))) / 2, 0.05)
    return {
        "brows": [(float(e[0]), float(e[1]) - 0.32, 0.30, 0.12) for e in eyes],
        "eyes": [(float(e[0]), float(e[1]), 0.25, 0.14) for e in eyes],
        "nose": [(float(nose_c[0]), float(nose_c[1]), 0.18, nose_half)],
        "mouth": [(float(mouth_c[0]), float(mouth_c[1]), mouth_half + 0.05, 0.17)],
        "chin": [(float(mouth_c[0]), float(mouth_c[1]) + 0.45, 0.40, 0.20)],
    }


def region_masks(landmarks: np.ndarray, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """Boolean (H, W) mask of each region for one face."""
    frame = FaceFrame.from_landmarks(landmarks)
    u, v = frame.pixel_uv(shape)
    masks = {}
    for name, ellipses in region_ellipses(frame).items():
        m = np.zeros(shape[:2], dtype=bool)
        for cu, cv, au, av in ellipses:
            m |= ((u - cu) / au) ** 2 + ((v - cv) / av) ** 2 <= 1.0
        masks[name] = m
    return masks


def coverage_by_region(hidden: np.ndarray, landmarks: np.ndarray) -> dict[str, float]:
    """Share of each region's pixels that ``hidden`` covers (NaN for a region outside the image)."""
    out = {}
    for name, m in region_masks(landmarks, hidden.shape[:2]).items():
        n = int(m.sum())
        out[name] = float((hidden & m).sum() / n) if n else float("nan")
    return out
