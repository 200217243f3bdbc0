"""``bench occlusions``: throughput against albumentations' CoarseDropout, and coverage of each face region.

Throughput: one thread, 112x112 RGB built-in faces, every transform called the same way
(``transform(image=..., keypoints=...)``) in interleaved rounds so that load on the machine hits all of
them alike; images/s is the best round (as ``timeit`` does: slower rounds measure interference, not the
code). Coverage: the share of each region's pixels (``regions.py``) an occlusion hides, averaged over
built-in faces under random roll, scale and shift (``data.pose.vary_pose``).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import albumentations as A
import cv2
import numpy as np

from ..data.faceset import FaceSet
from ..data.paired import face_seed
from ..data.pose import bench_faces
from ..occlusions.base import Occlusion
from ..occlusions.regions import REGIONS, region_masks
from ..registry import registry

REFERENCE = "CoarseDropout (1 hole)"


def reference_transform() -> A.BasicTransform:
    return A.CoarseDropout(num_holes_range=(1, 1), fill=0, p=1.0)


@contextmanager
def one_thread() -> Iterator[None]:
    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


def throughput(transforms: dict[str, Callable[..., Any]], faces: FaceSet, calls: int = 200, rounds: int = 5,
               tick: Callable[[], None] | None = None) -> dict[str, float]:
    """Images per second of each transform, one thread, measured in interleaved rounds (best round)."""
    best = {name: float("inf") for name in transforms}
    n = len(faces)
    with one_thread():
        for transform in transforms.values():  # warm up: first calls pay for imports and caches
            for i in range(min(calls, 20)):
                transform(image=faces.images[i % n], keypoints=faces.landmarks[i % n])
        for _ in range(rounds):
            for name, transform in transforms.items():
                t0 = time.perf_counter()
                for i in range(calls):
                    transform(image=faces.images[i % n], keypoints=faces.landmarks[i % n])
                best[name] = min(best[name], time.perf_counter() - t0)
                if tick is not None:
                    tick()
    return {name: calls / t for name, t in best.items()}


def coverage(occlusion: Occlusion, faces: FaceSet, regions: list[dict[str, np.ndarray]], seed: int = 0,
             tick: Callable[[], None] | None = None) -> dict[str, float]:
    """Mean share of each region's pixels hidden, over faces (faces where a region falls outside are skipped)."""
    sums = dict.fromkeys(REGIONS, 0.0)
    counts = dict.fromkeys(REGIONS, 0)
    for i in range(len(faces)):
        _, hidden = occlusion.occlude(faces.images[i], faces.landmarks[i], seed=face_seed(seed, i))
        for name, m in regions[i].items():
            total = int(np.count_nonzero(m))
            if total:
                sums[name] += np.count_nonzero(hidden & m) / total
                counts[name] += 1
        if tick is not None:
            tick()
    return {name: round(sums[name] / counts[name], 4) if counts[name] else None
            for name in REGIONS}


def run(names: list[str] | None = None, *, n_faces: int = 512, size: int = 112, calls: int = 200, rounds: int = 5,
        seed: int = 0, reporter: Any = None) -> dict[str, Any]:
    """Measure every registered occlusion (or ``names``); a plugin that fails is reported in its entry."""
    reg = registry("occlusions")
    names = reg.names() if names is None else names
    built: dict[str, Occlusion] = {}
    failed: dict[str, str] = {}
    for name in names:
        try:
            built[name], _ = reg.build(name)
        except Exception as exc:  # a third-party plugin must not take the benchmark down
            failed[name] = f"could not be built: {type(exc).__name__}: {exc}"
    faces = bench_faces(n_faces, size, seed)
    regions = [region_masks(faces.landmarks[i], faces.images.shape[1:3]) for i in range(n_faces)]
    cov: dict[str, dict[str, float]] = {}
    bar = reporter.stage("coverage", n_faces * len(built)) if reporter else None
    for name, occ in list(built.items()):
        try:
            cov[name] = coverage(occ, faces, regions, seed, tick=bar.advance if bar else None)
        except Exception as exc:
            failed[name] = f"failed on a face: {type(exc).__name__}: {exc}"
            del built[name]
    if bar:
        bar.close()
    # the same 64 faces for speed whatever --faces is: throughput depends on how large the faces are
    speed_faces = faces.subset(np.arange(64)) if n_faces >= 64 else bench_faces(64, size, seed)
    transforms: dict[str, Callable[..., Any]] = {REFERENCE: reference_transform(), **built}
    bar = reporter.stage("speed", rounds * len(transforms)) if reporter else None
    speed = throughput(transforms, speed_faces, calls, rounds, tick=bar.advance if bar else None)
    if bar:
        bar.close()
    ref = speed[REFERENCE]
    result: dict[str, Any] = {
        "reference": {"name": REFERENCE, "images_per_s": round(ref, 1)},
        "occlusions": {},
        "setup": {"image_size": size, "channels": 3, "threads": 1, "faces": n_faces, "calls": calls,
                  "rounds": rounds, "seed": seed, "albumentations": A.__version__,
                  "origins": {n: reg.get(n).origin for n in names}},
    }
    for name in names:
        if name in failed:
            result["occlusions"][name] = {"error": failed[name]}
        else:
            result["occlusions"][name] = {"images_per_s": round(speed[name], 1),
                                          "relative": round(speed[name] / ref, 3), "coverage": cov[name]}
    return result
