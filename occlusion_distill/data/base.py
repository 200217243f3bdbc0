"""``FaceDataset``: the plugin interface of data sets."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from .faceset import FaceSet

SPLITS = ("train", "val", "test")


class FaceDataset:
    """Base class of data set plugins: ``load(split, image_size=..., channels=...)`` -> FaceSet."""

    #: label names the data set provides (tasks check theirs is among them)
    labels: tuple[str, ...] = ()
    #: channels the images have natively (1 grey, 3 RGB); a run may convert
    native_channels: int = 3
    #: the folder where the data set keeps files it makes from its data for reuse (generated faces,
    #: resized copies); None: nothing that outlasts the process. A run sets it with ``use_cache``.
    cache_dir: Path | None = None

    def use_cache(self, root: str | Path | None) -> None:
        """Keep files made from the data under ``root``, the run's cache folder (None, as under
        ``--no-cache``: nothing that outlasts the run). A run calls this once, after building the data set
        and before the first ``load``; files kept here may never change what ``load`` returns."""
        self.cache_dir = Path(root) if root is not None else None

    def load(self, split: str, *, image_size: int, channels: int,
             progress: Callable[[int], None] | None = None) -> FaceSet:
        raise NotImplementedError

    def size(self, split: str) -> int:
        """Number of faces in a split (for progress bars)."""
        raise NotImplementedError

    def fingerprint(self) -> dict:
        """What identifies this data (for cache keys of teachers trained on it)."""
        return {"name": type(self).__name__}
