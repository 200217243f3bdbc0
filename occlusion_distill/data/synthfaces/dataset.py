"""The built-in data set plugin ``synthfaces`` (generated once per setting, then read from cache)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

import numpy as np

from ...io import atomic_write
from ...errors import UsageError
from ..base import SPLITS, FaceDataset
from ..faceset import FaceSet
from .generator import EXPRESSIONS, GENDERS, GENERATOR_VERSION, generate

_SPLIT_STREAM = {"train": 0, "val": 1, "test": 2}


class SynthFaces(FaceDataset):
    """Built-in procedural faces with 5 landmarks; expression, gender and age labels; no download."""

    labels = ("expression", "gender", "age")
    native_channels = 3

    def __init__(self, n_train: int = 5000, n_val: int = 600, n_test: int = 1500,
                 label_noise: float = 0.1, seed: int = 0, cache_dir: str | Path | None = None):
        for key, n in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
            if not isinstance(n, int) or n < 1:
                raise UsageError(f"synthfaces: {key} must be a positive integer, not {n!r}")
        self.counts = {"train": n_train, "val": n_val, "test": n_test}
        self.label_noise = float(label_noise)
        self.seed = int(seed)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._own_cache = self.cache_dir is not None  # a folder given as an option is kept over the run's

    def use_cache(self, root: str | Path | None) -> None:
        if not self._own_cache:
            super().use_cache(root)

    def size(self, split: str) -> int:
        return self.counts[split]

    def fingerprint(self) -> dict:
        return {"name": "synthfaces", "counts": self.counts, "label_noise": self.label_noise,
                "seed": self.seed, "generator": GENERATOR_VERSION}

    def load(self, split: str, *, image_size: int, channels: int,
             progress: Callable[[int], None] | None = None) -> FaceSet:
        if split not in SPLITS:
            raise UsageError(f"unknown split '{split}'; splits are {', '.join(SPLITS)}")
        # Each split is its own random stream, so changing n_test never changes the training faces.
        args = dict(n=self.counts[split], size=image_size, channels=channels,
                    seed=self.seed * 3 + _SPLIT_STREAM[split] + 1000,
                    label_noise=self.label_noise if split == "train" else 0.0)
        path = None
        if self.cache_dir is not None:
            key = hashlib.sha256(json.dumps({**args, "v": GENERATOR_VERSION}, sort_keys=True).encode()).hexdigest()[:16]
            path = self.cache_dir / "synthfaces" / f"{split}-{key}.npz"
            if path.is_file():
                try:
                    with np.load(path) as z:
                        faces = FaceSet(z["images"], z["landmarks"],
                                        {k: z[k] for k in self.labels},
                                        {"expression": list(EXPRESSIONS), "gender": list(GENDERS)},
                                        name="synthfaces")
                    if progress is not None:
                        progress(len(faces))
                    return faces
                except Exception:
                    path.unlink(missing_ok=True)  # a damaged cache entry is rebuilt, not trusted
        faces = generate(progress=progress, **args)
        if path is not None:
            def save(tmp: Path) -> None:
                with open(tmp, "wb") as fh:
                    np.savez(fh, images=faces.images, landmarks=faces.landmarks, **faces.labels)

            atomic_write(path, save)
        return faces
