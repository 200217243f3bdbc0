"""Finding a data set's files under ``--source`` and keeping account of what was skipped."""

from __future__ import annotations

import atexit
import hashlib
import os
import re
import shutil
import tempfile
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import cv2
import numpy as np

from ..errors import DataError, UsageError

MAX_DEPTH = 4  # how deep --source is searched: enough for ../shared/data/<set>/<file>

# What archive tools, operating systems, NAS boxes and notebooks leave beside a user's files: never a
# class, never an image, never a face to blame. Hidden names (".*", which covers AppleDouble "._*"
# sidecars, .DS_Store and .ipynb_checkpoints) are leftovers too.
LEFTOVER_NAMES = frozenset({"__macosx", "thumbs.db", "ehthumbs.db", "desktop.ini", "@eadir", "$recycle.bin",
                            "system volume information", "__pycache__", "lost+found", "#recycle", "#snapshot"})
LEFTOVER_REASON = "system or archive file (not a face image)"


def is_leftover(path: str | Path) -> bool:
    """Whether any part of ``path`` (a file system path or a zip member name) is a leftover such as
    ``__MACOSX/``, an AppleDouble ``._x.jpg`` sidecar, ``.DS_Store``, ``Thumbs.db`` or ``@eaDir/``."""
    parts = [p for p in re.split(r"[\\/]", str(path)) if p not in ("", ".", "..")]
    return any(p.startswith(".") or p.lower() in LEFTOVER_NAMES for p in parts)


def search(source: Path, match: Callable[[Path], bool], what: str) -> list[Path]:
    """Files under ``source`` (a file, or a folder searched ``MAX_DEPTH`` deep) that ``match``, sorted."""
    source = Path(source)
    if not source.exists():
        raise UsageError(f"--source {source} does not exist")
    if source.is_file():
        return [source] if match(source) else []
    found = []
    base = len(source.parts)
    for root, dirs, files in os.walk(source):
        depth = len(Path(root).parts) - base
        dirs[:] = sorted(d for d in dirs if not is_leftover(d)) if depth < MAX_DEPTH else []
        found += [Path(root) / f for f in files if not is_leftover(f) and match(Path(root) / f)]
    return sorted(found)


#: files taken out of a zip for reading -> the zip they came from (what the manifest records)
EXTRACTED: dict[Path, Path] = {}


def _cleanup_extracted() -> None:
    for path in list(EXTRACTED):
        shutil.rmtree(path.parent, ignore_errors=True)
        EXTRACTED.pop(path, None)


atexit.register(_cleanup_extracted)


def one_file(source: Path, names: Iterable[str], what: str) -> Path:
    """Exactly one file named one of ``names`` under ``source`` (a folder, the file itself, or inside a zip
    there); a clear error for none or several."""
    names = tuple(names)
    hits = search(source, lambda p: p.name in names, what)
    if not hits:  # inside zips: extract the member once, to a temporary folder
        zips = search(source, lambda p: p.suffix == ".zip", what)
        for z in zips:
            try:
                with zipfile.ZipFile(z) as archive:
                    member = next((m for m in archive.namelist()
                                   if Path(m).name in names and not is_leftover(m)), None)
                    if member is not None:
                        folder = Path(tempfile.mkdtemp(prefix="occdistill-"))
                        target = folder / Path(member).name
                        with archive.open(member) as src, open(target, "wb") as dst:
                            shutil.copyfileobj(src, dst, 1 << 22)
                        EXTRACTED[target] = z
                        hits.append(target)
            except zipfile.BadZipFile as exc:
                raise DataError(f"{z} is not a valid zip file: {exc}") from exc
    if not hits:
        raise DataError(f"no {' or '.join(names)} under {source}: is this the {what} data?")
    if len(hits) > 1:
        raise UsageError(f"several {' / '.join(names)} files under {source} ({', '.join(map(str, hits[:3]))}): "
                         f"point --source at one of them")
    return hits[0]


@dataclass
class SkipLog:
    """Faces left out, counted by reason, with a few examples of each."""

    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    limit: int = 10

    def add(self, reason: str, example: str = "") -> None:
        self.counts[reason] += 1
        shown = self.examples.setdefault(reason, [])
        if example and len(shown) < self.limit:
            shown.append(example)

    def as_dict(self) -> dict[str, Any]:
        return {reason: {"count": n, "examples": self.examples.get(reason, [])}
                for reason, n in sorted(self.counts.items())}

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def describe(self) -> str:
        """``reason (count); ...`` in reason order, for one-line errors ('' when nothing was left out)."""
        return "; ".join(f"{reason} ({n})" for reason, n in sorted(self.counts.items()))


def read_image(data: bytes, channels: int) -> np.ndarray | None:
    """JPEG/PNG/... bytes -> (H, W) grey or (H, W, 3) RGB uint8; None when empty or undecodable."""
    if not data:  # an empty file (a failed download): OpenCV raises on an empty buffer
        return None
    flag = cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR
    try:
        img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flag)
    except cv2.error:
        return None
    if img is None or img.size == 0:
        return None
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB) if channels == 3 else img


def decode_image(data: bytes, channels: int, size: int) -> np.ndarray | None:
    """JPEG/PNG bytes -> (size, size, channels) uint8, centre-cropped to a square; None when undecodable."""
    img = read_image(data, channels)
    if img is None:
        return None
    h, w = img.shape[:2]
    if h != w:
        k = min(h, w)
        y0, x0 = (h - k) // 2, (w - k) // 2
        img = img[y0:y0 + k, x0:x0 + k]
    if img.shape[0] != size:
        interp = cv2.INTER_AREA if img.shape[0] > size else cv2.INTER_CUBIC
        img = cv2.resize(img, (size, size), interpolation=interp)
    return img.reshape(size, size, channels)


def crop_box(img: np.ndarray, box: tuple[float, float, float, float], size: int) -> np.ndarray | None:
    """Crop (x, y, w, h) made square about its centre, padded by edge replication, resized to ``size``."""
    x, y, w, h = box
    if not (w > 1 and h > 1):
        return None
    side = max(w, h)
    cx, cy = x + w / 2, y + h / 2
    scale = size / side
    m = np.array([[scale, 0, size / 2 - cx * scale], [0, scale, size / 2 - cy * scale]], dtype=np.float64)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    out = cv2.warpAffine(img, m, (size, size), flags=interp, borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(size, size, -1)


def stratified_split(names: list[str], strata: list[Any], seed: int, digests: list[str] | None = None,
                     fractions: tuple[float, float] = (0.8, 0.1)) -> dict[str, list[int]]:
    """Deterministic train/val/test indices, stratified.

    Faces are ordered by stratum, and within it by a seeded hash of the name; then dealt out in turn
    from a cycle of 10 (8 train, 1 val, 1 test for the default fractions), so every stratum is spread
    over the splits in proportion and even small strata reach val and test. Files with the same digest
    share the split of the first of them by name, so a duplicate never straddles two splits.
    """
    n_train, n_val = int(round(10 * fractions[0])), int(round(10 * fractions[1]))
    cycle = ["train"] * n_train + ["val"] * n_val + ["test"] * max(10 - n_train - n_val, 0)
    groups: dict[Any, list[int]] = {}
    for i, key in enumerate(strata):
        groups.setdefault(key, []).append(i)
    order = []
    for key in sorted(groups, key=repr):
        order += sorted(groups[key], key=lambda i: hashlib.sha1(f"{seed}:{names[i]}".encode()).hexdigest())
    split_of = {i: cycle[k % len(cycle)] for k, i in enumerate(order)}
    if digests is not None:
        first: dict[str, int] = {}
        for i in sorted(range(len(names)), key=lambda i: names[i]):
            first.setdefault(digests[i], i)
            split_of[i] = split_of[first[digests[i]]]
    out: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for i in range(len(names)):
        out[split_of[i]].append(i)
    return out
