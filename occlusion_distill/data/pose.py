"""Faces under random roll, scale and shift, with their landmarks moved along: to test placement.

Occlusions are placed by landmarks, so a fair test of them needs faces that are not all upright and
centred. ``vary_pose`` warps each face by a random similarity transform (about the image centre)
and applies the same transform to its landmarks; ``bench_faces`` gives the built-in faces posed so
that ``bench occlusions`` and the occlusion contract checks measure on.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from .faceset import FaceSet
from .synthfaces import generate


def similarity(size: tuple[int, int], scale: float, roll_deg: float, shift: tuple[float, float]) -> np.ndarray:
    """2x3 matrix mapping continuous pixel coordinates (pixel centres at +0.5) of the source to the target."""
    h, w = size
    c, s = math.cos(math.radians(roll_deg)) * scale, math.sin(math.radians(roll_deg)) * scale
    a = np.array([[c, -s], [s, c]])
    centre = np.array([w / 2, h / 2])
    t = centre + np.asarray(shift, dtype=np.float64) - a @ centre
    return np.hstack([a, t[:, None]])


def warp_face(image: np.ndarray, landmarks: np.ndarray, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Warp one face and its landmarks by a continuous-coordinate 2x3 matrix (see ``similarity``)."""
    h, w = image.shape[:2]
    a, t = matrix[:, :2], matrix[:, 2]
    # cv2 puts pixel centres at integers: shift into its convention and back
    cv_matrix = np.hstack([a, (t + a @ [0.5, 0.5] - 0.5)[:, None]])
    out = cv2.warpAffine(image, cv_matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    out = out.reshape(image.shape)
    return out, (np.asarray(landmarks, dtype=np.float64) @ a.T + t).astype(np.float32)


def vary_pose(faces: FaceSet, seed: int = 0, scale: tuple[float, float] = (0.7, 1.15),
              roll: float = 25.0, shift: float = 0.08) -> FaceSet:
    """A copy of ``faces``, each under its own random scale, roll (degrees, ±) and shift (share of the size)."""
    rng = np.random.default_rng(seed)
    images = np.empty_like(faces.images)
    landmarks = np.empty_like(faces.landmarks)
    h, w = faces.images.shape[1:3]
    for i in range(len(faces)):
        m = similarity((h, w), rng.uniform(*scale), rng.uniform(-roll, roll),
                       tuple(rng.uniform(-shift, shift, 2) * (w, h)))
        images[i], landmarks[i] = warp_face(faces.images[i], faces.landmarks[i], m)
    return FaceSet(images, landmarks, dict(faces.labels), dict(faces.classes), name=faces.name)


def bench_faces(n: int, size: int = 112, seed: int = 0) -> FaceSet:
    """``n`` built-in RGB faces of ``size`` px under varied pose and scale (the same for every call with this seed)."""
    return vary_pose(generate(n, size=size, channels=3, seed=seed + 7000), seed=seed)
