"""Prepared data: what ``occdistill data prepare`` writes once and every run reads fast.

A prepared directory holds, per split, ``<split>.images.npy`` (N, H, W, C uint8, read memory-mapped),
``<split>.landmarks.npy`` (N, 5, 2 float32, pixel (x, y), MTCNN order), ``<split>.<label>.npy`` for
each label, and one ``manifest.json``: the data set, the options and source files used (with sizes and
SHA-256), counts per split, what was skipped and why, how each face got its landmarks, and checksums
of the arrays. The directory is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import hashlib
import tempfile
import json
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from ..errors import DataError, UsageError
from ..io import default_cache_dir
from .base import SPLITS, FaceDataset
from .faceset import FaceSet

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def read_manifest(root: Path) -> dict[str, Any]:
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise DataError(f"{root} is not prepared data (no {MANIFEST}): run `occdistill data prepare NAME "
                        f"--source PATH --out {root}` first")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path} is unreadable: {exc}") from exc
    if manifest.get("format") != FORMAT_VERSION:
        raise DataError(f"{root} was prepared in format {manifest.get('format')}; this version reads format "
                        f"{FORMAT_VERSION}: prepare it again")
    return manifest


FACES_VERSION = 1  # of the resized, memory-mapped faces in the cache
CHUNK = 2048  # faces resized at a time


def resize_faces(images: np.ndarray, landmarks: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Square faces resized to ``size`` (area averaging down, cubic up); landmarks scaled along."""
    n, h, w, c = images.shape
    if (h, w) == (size, size):
        return images, landmarks
    interp = cv2.INTER_AREA if size < h else cv2.INTER_CUBIC
    out = np.empty((n, size, size, c), dtype=np.uint8)
    for i in range(n):
        out[i] = cv2.resize(images[i], (size, size), interpolation=interp).reshape(size, size, c)
    scale = np.array([size / w, size / h], dtype=np.float32)
    return out, (landmarks * scale).astype(np.float32)


def convert_channels(images: np.ndarray, channels: int) -> np.ndarray:
    have = images.shape[-1]
    if have == channels:
        return images
    if channels == 1:  # ITU-R 601 luminance, as synthfaces and OpenCV do
        return (images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).round().astype(np.uint8)[..., None]
    return np.repeat(images, 3, axis=-1)


class PreparedDataset(FaceDataset):
    """Base class of data sets read from a prepared directory (``data=DIR``, i.e. ``run --data DIR``).

    Subclasses set ``key`` (the name in manifests), ``labels``, ``native_channels`` and write ``prepare``
    support in ``prepare.py``; label modes that select or relabel faces go in ``select``.
    """

    key = ""

    def __init__(self, data: str | Path | None = None, n_train: int | None = None, n_val: int | None = None,
                 n_test: int | None = None):
        self.limits = {"train": n_train, "val": n_val, "test": n_test}
        for split, n in self.limits.items():
            if n is not None and (not isinstance(n, int) or n < 1):
                raise UsageError(f"{self.key}: n_{split} must be a positive integer, not {n!r}")
        self.root = Path(data) if data else None
        #: resized faces are memory-mapped from ``cache_dir / "faces"`` (the run sets it with ``use_cache``;
        #: None: a temporary file)
        self.cache_dir: Path | None = default_cache_dir()
        self.manifest: dict[str, Any] = {}
        if self.root is not None:
            self.manifest = read_manifest(self.root)
            if self.manifest.get("dataset") != self.key:
                raise UsageError(f"{self.root} holds prepared '{self.manifest.get('dataset')}' data, not "
                                 f"'{self.key}'")
            self.labels = tuple(self.manifest["labels"])
            self.native_channels = int(self.manifest["channels"])

    def _need_data(self) -> Path:
        if self.root is None:
            raise UsageError(f"data set '{self.key}' reads prepared data: run `occdistill data prepare {self.key} "
                             f"--source PATH --out DIR`, then pass --data DIR")
        return self.root

    def fingerprint(self) -> dict:
        return {"name": self.key, "arrays": self.manifest.get("checksums", {}), "select": self.selection()}

    def selection(self) -> dict[str, Any]:
        """The options that choose faces or labels at load time (part of the cache key)."""
        return {f"n_{s}": n for s, n in self.limits.items() if n is not None}

    def choose(self, split: str, labels: dict[str, np.ndarray]) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
        """``select`` (label modes), then a seeded subset of ``n_<split>`` faces (quick runs on real data)."""
        index, labels = self.select(split, labels)
        n = self.limits.get(split)
        total = len(next(iter(labels.values()))) if labels else 0
        if n is not None and n < total:
            pick = np.sort(np.random.default_rng(0).choice(total, n, replace=False))
            labels = {k: v[pick] for k, v in labels.items()}
            index = pick if index is None else index[pick]
        return index, labels

    def select(self, split: str, labels: dict[str, np.ndarray]) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
        """Which faces to keep (an index, or None for all) and the labels to use; overridden by label modes."""
        return None, labels

    def size(self, split: str) -> int:
        self._need_data()
        index, _ = self.choose(split, self._labels(split))
        return int(self.manifest["counts"][split]) if index is None else int(len(index))

    def _faces_at(self, images: np.ndarray, index: np.ndarray | None, split: str, size: int, channels: int) -> np.ndarray:
        """The split's faces at this size and channel count, memory-mapped: converted once, in chunks, to a
        file in the cache, so that RAM does not grow with the data set (pages are read as faces are used)."""
        from numpy.lib.format import open_memmap

        from ..io import key_digest
        from ..io import atomic_write

        key = {"what": "faces", "arrays": self.manifest.get("checksums", {}).get(f"{split}.images.npy"),
               "root": str(self.root.resolve()), "split": split, "size": size, "channels": channels,
               "index": None if index is None else hashlib.sha256(np.ascontiguousarray(index).tobytes()).hexdigest(),
               "version": FACES_VERSION}
        n = len(images) if index is None else len(index)
        name = f"{self.key}-{split}-{size}px-{channels}c-{key_digest(key)}.npy"
        temporary = self.cache_dir is None  # --no-cache: a file that is gone once mapped (Linux keeps the map)
        path = Path(tempfile.mkdtemp(prefix="occdistill-faces-")) / name if temporary else self.cache_dir / "faces" / name
        if path.is_file():
            try:
                cached = np.load(path, mmap_mode="r")
                if cached.shape == (n, size, size, channels) and cached.dtype == np.uint8:
                    return cached
            except (OSError, ValueError):
                pass  # damaged: write it again

        def write(tmp: Path) -> None:
            out = open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, size, size, channels))
            for start in range(0, n, CHUNK):
                rows = np.arange(start, min(n, start + CHUNK))
                chunk = np.asarray(images[rows if index is None else index[rows]])
                dummy = np.zeros((len(chunk), 5, 2), np.float32)
                out[start:start + len(chunk)] = convert_channels(resize_faces(chunk, dummy, size)[0], channels)
            out.flush()
            del out

        try:
            atomic_write(path, write)
        except OSError:  # a cache that cannot be written: keep the faces in memory instead
            chunk_all = np.asarray(images if index is None else images[index])
            return convert_channels(resize_faces(chunk_all, np.zeros((n, 5, 2), np.float32), size)[0], channels)
        mapped = np.load(path, mmap_mode="r")
        if temporary:
            path.unlink()
            path.parent.rmdir()
        return mapped

    def _labels(self, split: str) -> dict[str, np.ndarray]:
        root = self._need_data()
        try:
            return {name: np.load(root / f"{split}.{name}.npy") for name in self.manifest["label_arrays"]}
        except (OSError, ValueError) as exc:
            raise DataError(f"prepared data in {root} is damaged ({exc}): prepare it again") from exc

    def load(self, split: str, *, image_size: int, channels: int,
             progress: Callable[[int], None] | None = None) -> FaceSet:
        if split not in SPLITS:
            raise UsageError(f"unknown split '{split}'; splits are {', '.join(SPLITS)}")
        root = self._need_data()
        try:
            images = np.load(root / f"{split}.images.npy", mmap_mode="r")
            landmarks = np.load(root / f"{split}.landmarks.npy")
            labels = self._labels(split)
        except (OSError, ValueError) as exc:
            raise DataError(f"prepared data in {root} is damaged ({exc}): prepare it again") from exc
        index, labels = self.choose(split, labels)
        if index is not None:
            landmarks = landmarks[index]
        if len(landmarks) == 0:
            raise DataError(f"no faces left in the {split} split of {root} with {self.selection() or 'these options'}")
        h, w = images.shape[1:3]
        landmarks = (landmarks * np.array([image_size / w, image_size / h], dtype=np.float32)).astype(np.float32)
        faces = FaceSet(self._faces_at(images, index, split, image_size, channels), landmarks, labels,
                        {k: list(v) for k, v in self.manifest.get("classes", {}).items()}, name=self.key)
        if progress is not None:
            progress(len(faces))
        return faces
