"""Before/after grids of occluded faces with their landmarks, to judge an occlusion at a glance."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from ..data.faceset import FaceSet
from ..data.paired import face_seed
from ..errors import UsageError
from ..occlusions.base import Occlusion

# MTCNN order: left eye, right eye, nose, left mouth corner, right mouth corner
_LANDMARK_COLOURS = [(40, 200, 60), (40, 200, 60), (250, 200, 30), (230, 50, 50), (230, 50, 50)]
_GAP, _PAIR_GAP, _HEADER = 2, 10, 22


def _tile(image: np.ndarray, landmarks: np.ndarray, size: int) -> np.ndarray:
    rgb = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image
    h, w = rgb.shape[:2]
    scale = size / max(h, w)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    tile = np.ascontiguousarray(cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=interp))
    r = max(1, round(size / 48))
    for (x, y), colour in zip(np.asarray(landmarks, dtype=np.float64) * scale, _LANDMARK_COLOURS):
        centre = (int(round(x * 16)), int(round(y * 16)))
        cv2.circle(tile, centre, (r + 1) * 16, (20, 20, 20), -1, cv2.LINE_AA, shift=4)
        cv2.circle(tile, centre, r * 16, colour, -1, cv2.LINE_AA, shift=4)
    return tile


def preview_grid(faces: FaceSet, occlusion: Occlusion, *, seed: int = 0, tile: int = 96, columns: int = 4,
                 title: str = "") -> np.ndarray:
    """An RGB uint8 grid: for each face, the clean face and the occluded one side by side, landmarks drawn."""
    n = len(faces)
    if n == 0:
        raise UsageError("preview: no faces to show")
    columns = max(1, min(columns, n))
    rows = -(-n // columns)
    pair_w = 2 * tile + _GAP
    width = columns * pair_w + (columns + 1) * _PAIR_GAP
    header = _HEADER if title else 0
    height = header + rows * tile + (rows + 1) * _PAIR_GAP
    grid = np.full((height, width, 3), 255, dtype=np.uint8)
    for i in range(n):
        img, lm = faces.images[i], faces.landmarks[i]
        occluded = occlusion.occlude_image(img, lm, seed=face_seed(seed, i))
        r, c = divmod(i, columns)
        y = header + _PAIR_GAP + r * (tile + _PAIR_GAP)
        x = _PAIR_GAP + c * (pair_w + _PAIR_GAP)
        for k, picture in enumerate((img, occluded)):
            t = _tile(picture, lm, tile)
            grid[y:y + t.shape[0], x + k * (tile + _GAP):x + k * (tile + _GAP) + t.shape[1]] = t
    if title:
        cv2.putText(grid, title, (_PAIR_GAP, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (30, 30, 30), 1, cv2.LINE_AA)
    return grid


def preview_faces(dataset: str, dataset_args: dict[str, Any], *, split: str = "test", n: int = 16, seed: int = 0,
                  image_size: int = 112, channels: int | None = None, vary: bool = True, progress: Callable[[int], None] | None = None) -> FaceSet:
    """``n`` faces of a data set split (a seeded choice), optionally under random roll, scale and shift."""
    from ..data.base import SPLITS
    from ..data.pose import vary_pose
    from ..registry import registry

    if split not in SPLITS:
        raise UsageError(f"unknown split '{split}'; splits are {', '.join(SPLITS)}")
    args = dict(dataset_args)
    if dataset == "synthfaces":
        args.setdefault(f"n_{split}", n)  # generate only what is shown
    data, _ = registry("datasets").build(dataset, **args)
    faces = data.load(split, image_size=image_size, channels=channels or data.native_channels, progress=progress)
    if len(faces) > n:
        faces = faces.subset(np.sort(np.random.default_rng(seed).choice(len(faces), n, replace=False)))
    return vary_pose(faces, seed=seed) if vary else faces


def save_png(grid: np.ndarray, path: Path, palette: bool = False) -> None:
    """Write the grid as an optimised PNG, atomically; ``palette``: 256 colours, about 4x smaller (for docs)."""
    from PIL import Image

    from ..io import atomic_write

    picture = Image.fromarray(grid)
    if palette:
        picture = picture.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    atomic_write(Path(path), lambda tmp: picture.save(tmp, format="PNG", optimize=True))
