"""``affectnet``: AffectNet's manually annotated set in its official layout.

``training.csv`` and ``validation.csv`` list ``subDirectory_filePath, face_x, face_y, face_width,
face_height, facial_landmarks, expression, valence, arousal``; the images sit under
``Manually_Annotated_Images/`` (or beside the CSVs). Faces are cropped by their box (made square about
its centre) and resized to ``size`` (default 112). Expression codes 0-7 are the 8 classes kept
(neutral, happy, sad, surprise, fear, disgust, anger, contempt); codes 8 (none), 9 (uncertain) and
10 (non-face) are dropped and counted. The official validation set is the test split; the validation
split is a held-out 10% of training, stratified by class with a seeded hash of the file path.

The 68 annotated landmarks give the 5 the occlusions need (eye centres from points 36-41 and 42-47,
nose tip 30, mouth corners 48 and 54), so ``--landmarks given`` (the default for this data set via
``auto``) needs no detection.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from ..errors import DataError
from .prepared import PreparedDataset
from .sources import SkipLog, one_file, read_image, stratified_split

CLASSES = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt")
DROPPED = {8: "expression 8 (none)", 9: "expression 9 (uncertain)", 10: "expression 10 (non-face)"}
COLUMNS = ("subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "facial_landmarks",
           "expression", "valence", "arousal")
TEMPLATE = np.array([[0.33, 0.40], [0.67, 0.40], [0.50, 0.56], [0.36, 0.74], [0.64, 0.74]], np.float32)


def five_from_68(points: np.ndarray) -> np.ndarray:
    """iBUG 68-point landmarks -> the 5 MTCNN points (eye centres, nose tip, mouth corners)."""
    return np.stack([points[36:42].mean(axis=0), points[42:48].mean(axis=0), points[30], points[48], points[54]])


def crop_face(img: np.ndarray, box: tuple[float, float, float, float], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Crop the box made square about its centre (edges replicated), resized to ``size``; and the 2x3
    matrix taking continuous pixel coordinates (centres at +0.5) of the image to the crop."""
    x, y, w, h = box
    side = max(w, h)
    s = size / side
    a = np.array([[s, 0.0, size / 2 - (x + w / 2) * s], [0.0, s, size / 2 - (y + h / 2) * s]])
    cv = a.copy()
    cv[:, 2] += (s - 1) * 0.5  # cv2 puts pixel centres at integers
    out = cv2.warpAffine(img, cv, (size, size), flags=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC,
                         borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(size, size, -1), a


def _image_root(csv_path: Path) -> Path:
    for cand in (csv_path.parent / "Manually_Annotated_Images", csv_path.parent.parent / "Manually_Annotated_Images",
                 csv_path.parent):
        if cand.is_dir():
            return cand
    return csv_path.parent


def _read_csv(path: Path, size: int, limit: int | None, skipped: SkipLog,
              progress: Callable[[int], None] | None) -> dict[str, Any]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, [])
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"affectnet: cannot read {path}: {exc}") from exc
    if tuple(h.strip() for h in header) != COLUMNS:
        raise DataError(f"affectnet: {path.name} must have the columns {','.join(COLUMNS)}; found "
                        f"{','.join(header)[:120]}")
    root = _image_root(path)
    # one preallocated array, not a list of crops: AffectNet's 290k faces at 112 px are about 11 GB
    images = np.empty((len(rows) if limit is None else min(len(rows), limit), size, size, 3), dtype=np.uint8)
    labels, lms, names = [], [], []
    for k, row in enumerate(rows):
        if progress is not None:
            progress(1)
        if len(labels) >= len(images):
            break
        where = f"{path.name} row {k + 2}"
        if len(row) != len(COLUMNS):
            skipped.add("malformed row", where)
            continue
        try:
            code = int(row[6])
            box = tuple(float(v) for v in row[1:5])
            points = np.array([float(v) for v in row[5].split(";") if v.strip()], dtype=np.float64)
        except ValueError:
            skipped.add("malformed row", where)
            continue
        if code in DROPPED:
            skipped.add(DROPPED[code], where)
            continue
        if not 0 <= code < len(CLASSES):
            skipped.add("expression code outside 0..10", where)
            continue
        if points.size != 136 or box[2] <= 1 or box[3] <= 1:
            skipped.add("face box or 68 landmarks missing", where)
            continue
        file = root / row[0]
        if not file.is_file():
            skipped.add("image file not found", row[0])
            continue
        try:
            img = read_image(file.read_bytes(), 3)
        except OSError:
            img = None
        if img is None:
            skipped.add("image does not decode", row[0])
            continue
        crop, a = crop_face(img, box, size)
        five = five_from_68(points.reshape(68, 2))
        images[len(labels)] = crop
        lms.append((five @ a[:, :2].T + a[:, 2]).astype(np.float32))
        labels.append(code)
        names.append(row[0])
    return {"images": images[:len(labels)],
            "expression": np.array(labels, dtype=np.int64), "landmarks": np.array(lms, np.float32).reshape(-1, 5, 2),
            "names": names}


class AffectNet(PreparedDataset):
    """AffectNet (manually annotated): 8 expressions, face boxes and 68 landmarks from the official CSVs."""

    key = "affectnet"
    labels = ("expression",)
    native_channels = 3
    template = TEMPLATE
    stored_size = 112

    @staticmethod
    def read(source: Path, limit: int | None = None, progress: Callable[[int], None] | None = None,
             size: int = 112, seed: int = 0) -> dict[str, Any]:
        train_csv = one_file(source, ("training.csv",), "AffectNet")
        val_csv = one_file(source, ("validation.csv",), "AffectNet")
        skipped = SkipLog()
        train = _read_csv(train_csv, size, None if limit is None else limit * 10 // 9 + 1, skipped, progress)
        test = _read_csv(val_csv, size, limit, skipped, progress)
        index = stratified_split(train["names"], train["expression"].tolist(), seed, fractions=(0.9, 0.1))
        held = {"train": np.asarray(index["train"], dtype=int),
                "val": np.asarray(index["val"] + index["test"], dtype=int)}  # 90/10: val takes the rest
        splits = {s: {"images": train["images"][i], "labels": {"expression": train["expression"][i]},
                      "landmarks": train["landmarks"][i], "names": [train["names"][j] for j in i]}
                  for s, i in held.items()}
        splits["test"] = {"images": test["images"], "labels": {"expression": test["expression"]},
                          "landmarks": test["landmarks"], "names": test["names"]}
        return {"splits": splits, "skipped": skipped, "files": [train_csv, val_csv],
                "classes": {"expression": list(CLASSES)},
                "notes": {"split": f"test = official validation; val = 10% of training, stratified, seed {seed}"}}
