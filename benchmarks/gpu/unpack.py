"""Unpack `pack.py`'s ferplus.npz into a prepared FER+ folder (the format `occdistill data prepare` writes).

    python benchmarks/gpu/unpack.py .gpu/ferplus.npz /tmp/prepared/ferplus
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np

from occlusion_distill.io import file_digest

SPLITS = ("train", "val", "test")


def unmosaic(image: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The inverse of pack.mosaic: (N, S, S, 1) faces from the mosaic image."""
    n, s = shape[0], shape[1]
    rows, cols = image.shape[0] // s, image.shape[1] // s
    grid = image.reshape(rows, s, cols, s).transpose(0, 2, 1, 3).reshape(rows * cols, s, s)
    return np.ascontiguousarray(grid[:n, ..., None])


def main(packed: Path, out: Path) -> None:
    data = np.load(packed)
    manifest = json.loads(data["manifest"].tobytes())
    out.mkdir(parents=True, exist_ok=True)
    checksums, counts = {}, {}
    for split in SPLITS:
        shape = tuple(int(v) for v in data[f"{split}.shape"])
        faces = unmosaic(cv2.imdecode(data[f"{split}.webp"], cv2.IMREAD_GRAYSCALE), shape)
        arrays = {"images": faces, **{k.split(".", 1)[1]: data[k] for k in data.files
                                      if k.startswith(split + ".") and not k.endswith((".webp", ".shape"))}}
        for name, array in arrays.items():
            path = out / f"{split}.{name}.npy"
            np.save(path, array)
            checksums[path.name] = file_digest(path)
        counts[split] = len(faces)
    manifest.update(counts=counts, checksums=checksums)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    print(f"{out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()), file=sys.stderr)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
