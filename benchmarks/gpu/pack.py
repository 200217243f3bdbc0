"""Pack what the GPU piece carries to the device machine: FER+ faces, dlib's weights, the missing wheels.

At most 64 MiB travels with a device call, the repository included. Raw, the FER+ faces the protocol
uses (the `majority` rows: 25,060 / 3,199 / 3,153) are 72 MB, dlib's weights 22.5 MB and faiss's wheel
19 MB, so:

- validation and test faces travel losslessly (WebP lossless mosaics, ~70% of raw): every score is
  computed on exactly the faces the CPU runs see;
- training faces travel as WebP at quality 90 (~35% of raw; mean absolute error 1.6 grey levels of
  255, written into the manifest), noise far below what a training face's own augmentation changes;
- dlib's weights file is carried alone, xz-compressed (20.8 MB), not its 93 MB wheel of four models;
- no faiss: `triplet`'s default index searches exactly with torch where faiss is missing;
- only the wheels the machine lacks (../.library/device/KINDS.md lists what it has): albumentations
  and its own dependencies, for Python 3.12 on x86-64.

    python benchmarks/gpu/pack.py --prepared prepared/ferplus --out .gpu

`.gpu/` must be ignored by git (`echo /.gpu/ >> .git/info/exclude`) and named in the device call's
carry. Exits 1 when the repository and `.gpu/` together exceed 64 MiB.
"""

from __future__ import annotations

import argparse
import io
import json
import lzma
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from occlusion_distill.data.fer import ferplus_labels
from occlusion_distill.data.prepared import read_manifest
from occlusion_distill.models.dlib_resnet import installed_weights

LIMIT = 64 * 2**20
TRAIN_QUALITY = 90
SPLITS = ("train", "val", "test")
#: what the device lacks (KINDS.md, 2026-11-17), pinned to this workplace's versions; cp312, x86-64
WHEELS = ["albumentations==2.0.8", "albucore==0.0.24", "pydantic==2.14.4", "pydantic-core==2.50.5",
          "annotated-types==0.8.0", "typing-inspection==0.4.5", "simsimd==6.5.16", "stringzilla==5.3.2",
          # pydantic 2.14 needs typing-extensions >= 4.16; the machine's own may be older
          "typing-extensions==4.16.0"]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]


def mosaic(faces: np.ndarray) -> np.ndarray:
    """(N, S, S) uint8 -> one (rows*S, cols*S) image, faces row by row, the tail padded with black."""
    n, s = len(faces), faces.shape[1]
    cols = int(np.ceil(np.sqrt(n)))
    rows = -(-n // cols)
    grid = np.zeros((rows * cols, s, s), np.uint8)
    grid[:n] = faces
    return grid.reshape(rows, cols, s, s).transpose(0, 2, 1, 3).reshape(rows * s, cols * s)


def encode(faces: np.ndarray, lossless: bool) -> tuple[np.ndarray, float]:
    """WebP bytes of the mosaic of (N, S, S, 1) faces, and the mean absolute error of a round trip."""
    image = mosaic(faces[..., 0])
    ok, buf = cv2.imencode(".webp", image, [cv2.IMWRITE_WEBP_QUALITY, 101 if lossless else TRAIN_QUALITY])
    if not ok:
        raise SystemExit("OpenCV could not encode WebP")
    back = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    return buf.reshape(-1), float(np.abs(back.astype(np.int16) - image).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prepared", type=Path, required=True, help="FER+ prepared by `occdistill data prepare`")
    ap.add_argument("--out", type=Path, default=Path(".gpu"))
    args = ap.parse_args()
    manifest = read_manifest(args.prepared)
    if manifest["dataset"] != "ferplus":
        raise SystemExit(f"{args.prepared} holds {manifest['dataset']}, not ferplus")
    args.out.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    errors = {}
    names = ["landmarks", "landmark_source", *manifest["label_arrays"]]
    for split in SPLITS:
        votes = np.load(args.prepared / f"{split}.votes.npy")
        keep = ferplus_labels(votes, "majority")[0]
        for name in names:
            arrays[f"{split}.{name}"] = np.load(args.prepared / f"{split}.{name}.npy")[keep]
        images = np.load(args.prepared / f"{split}.images.npy")[keep]
        arrays[f"{split}.webp"], errors[split] = encode(images, lossless=split != "train")
        arrays[f"{split}.shape"] = np.array(images.shape)
        print(f"{split}: {int(keep.sum())} of {len(keep)} faces, {arrays[f'{split}.webp'].nbytes / 1e6:.1f} MB "
              f"(raw {images.nbytes / 1e6:.1f}), mean abs error {errors[split]:.3f}", file=sys.stderr)
    packed = dict(manifest, packed={"rows": "majority", "train_webp_quality": TRAIN_QUALITY,
                                    "lossless": ["val", "test"], "mean_abs_error": errors,
                                    "from_checksums": manifest.get("checksums", {})})
    arrays["manifest"] = np.frombuffer(json.dumps(packed).encode(), np.uint8)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    (args.out / "ferplus.npz").write_bytes(buf.getvalue())
    weights = installed_weights()
    (args.out / (weights.name + ".xz")).write_bytes(lzma.compress(weights.read_bytes(), preset=9))
    wheels = args.out / "whl"
    wheels.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
           "3.12", "--implementation", "cp", *[a for p in PLATFORMS for a in ("--platform", p)], "-d", str(wheels),
           *WHEELS]
    subprocess.run(cmd, check=True)
    # what travels besides the carry: tracked files, and untracked ones git does not ignore
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, check=True).stdout.split(b"\0")
    tree = sum(Path(p.decode()).stat().st_size for p in listed if p and Path(p.decode()).is_file())
    carried = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"carry {carried / 2**20:.1f} MiB + the working tree {tree / 2**20:.1f} MiB = "
          f"{(carried + tree) / 2**20:.1f} MiB of {LIMIT / 2**20:.0f}", file=sys.stderr)
    if carried + tree > LIMIT:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
