"""The 5 landmarks every occlusion needs: MTCNN (facenet-pytorch, offline weights) or a template.

MTCNN finds the face and its 5 points (eyes, nose tip, mouth corners). Every face is resized to 96 px
first: FER's 48 px faces are too small for MTCNN's smallest face (about 20 px after its first scaling),
and on 512 FER2013 faces 96 px found the most (87%, against 79% at 112 px), at about 150 faces/s on 2 cores. When several faces are found, the
largest wins (the data sets here are crops of one face). Where MTCNN finds nothing, the data set's
template (its typical landmark positions, relative to the crop) stands in, and the manifest counts how
many faces used each source.
"""

from __future__ import annotations

import contextlib
import io
from typing import Callable, Iterator

import cv2
import numpy as np

SOURCES = ("mtcnn", "template", "given")  # "given": the data set's own annotation (AffectNet)
DETECT_SIZE = 96  # faces are resized to this before detection (both up and down): see the module doc


def template_landmarks(template: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A relative (5, 2) template in pixel coordinates of an image of ``size`` (h, w)."""
    h, w = size
    return (np.asarray(template, dtype=np.float32) * np.array([w, h], dtype=np.float32)).astype(np.float32)


class Detector:
    """Batched MTCNN on CPU (or CUDA), built once; ``detect`` returns landmarks or None per face."""

    def __init__(self, device: str = "cpu", batch_size: int = 128):
        with contextlib.redirect_stderr(io.StringIO()):  # facenet-pytorch warns about its own torch usage
            from facenet_pytorch import MTCNN

        self.mtcnn = MTCNN(keep_all=True, device=device, post_process=False, min_face_size=40)
        self.batch_size = batch_size

    def detect(self, images: np.ndarray) -> list[np.ndarray | None]:
        """Landmarks (5, 2) in the images' own pixel coordinates, or None where no face was found."""
        n, h, w = images.shape[:3]
        rgb = images if images.shape[-1] == 3 else np.repeat(images, 3, axis=-1)
        interp = cv2.INTER_CUBIC if DETECT_SIZE > max(h, w) else cv2.INTER_AREA
        big = np.stack([cv2.resize(im, (DETECT_SIZE, DETECT_SIZE), interpolation=interp) for im in rgb])
        boxes, _, points = self.mtcnn.detect(big, landmarks=True)
        out: list[np.ndarray | None] = []
        scale = np.array([w / DETECT_SIZE, h / DETECT_SIZE], dtype=np.float32)
        for b, p in zip(boxes, points):
            if b is None or p is None or len(b) == 0:
                out.append(None)
                continue
            largest = int(np.argmax((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])))
            # facenet-pytorch's points are pixel indices (it subtracts MATLAB's 1): centres at integers,
            # where ours are at +0.5 (a flip is x -> W - x), so shift by half a pixel before scaling
            out.append(((p[largest] + 0.5) * scale).astype(np.float32))
        return out

    def batches(self, images: np.ndarray) -> Iterator[tuple[int, list[np.ndarray | None]]]:
        for start in range(0, len(images), self.batch_size):
            yield start, self.detect(np.asarray(images[start:start + self.batch_size]))


def add_landmarks(images: np.ndarray, template: np.ndarray, source: str, out: np.ndarray,
                  progress: Callable[[int], None] | None = None, detector: Detector | None = None,
                  used: np.ndarray | None = None) -> dict[str, int]:
    """Fill ``out`` (N, 5, 2) with landmarks for ``images`` and ``used`` (N,) with each face's source
    (an index into ``SOURCES``); returns how many faces used each source."""
    used = used if used is not None else np.zeros(len(images), dtype=np.uint8)
    if source not in ("mtcnn", "template"):
        raise ValueError(f"landmarks are detected ('mtcnn') or taken from the template, not {source!r}")
    counts = dict.fromkeys(SOURCES, 0)
    fallback = template_landmarks(template, images.shape[1:3])
    if source == "template":
        out[:] = fallback
        used[:] = SOURCES.index("template")
        counts["template"] = len(images)
        if progress is not None:
            progress(len(images))
        return counts
    detector = detector or Detector()
    for start, found in detector.batches(images):
        for k, lm in enumerate(found):
            if lm is None:
                out[start + k] = fallback
                used[start + k] = SOURCES.index("template")
                counts["template"] += 1
            else:
                out[start + k] = lm
                used[start + k] = SOURCES.index("mtcnn")
                counts["mtcnn"] += 1
        if progress is not None:
            progress(len(found))
    return counts
