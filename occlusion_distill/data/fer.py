"""``fer2013`` and ``ferplus``: the FER2013 CSV, with its original labels or the FER+ crowd votes.

``fer2013.csv`` (plain or ``.gz``) holds 35,887 grey 48x48 faces with a 7-class ``emotion`` and a
``Usage`` column (Training / PublicTest / PrivateTest -> train / val / test). FER+'s
``fer2013new.csv`` holds 10 crowd votes per row over neutral, happiness, surprise, sadness, anger,
disgust, fear, contempt, unknown and not-a-face. The two files are aligned by row position: the FER+
``Image name`` column cannot be used (173 rows have none, and most names do not match their row).

FER+ label modes, chosen at load time (``--dataset-arg mode=...``) from the same prepared data:

- ``majority`` (default; the FER+ reference rule of microsoft/FERPlus ``ferplus.py``): votes of 1 are
  dropped as noise; a face is kept when its top class then holds more than half of the remaining votes
  and is one of the 8 emotions (not unknown or not-a-face). Gives 25,060 / 3,199 / 3,153 faces.
- ``plurality``: the class with the most votes (ties dropped), when it is one of the 8 emotions.
- ``probability``: the 8 emotion votes (votes of 1 dropped) as a distribution, a soft target; faces
  whose emotion votes are not more than half of the remaining votes are dropped. The hard label is its
  most likely class.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import DataError, UsageError
from .prepared import PreparedDataset
from .sources import SkipLog, one_file

FER2013_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FERPLUS_CLASSES = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")
FERPLUS_COLUMNS = FERPLUS_CLASSES + ("unknown", "NF")
USAGE_SPLIT = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
SIZE = 48
# Where MTCNN puts the 5 points on FER faces, relative to the 48x48 crop: the mean over the 30,521
# faces it found in all of FER2013 (`occdistill data info DIR` prints it as "landmark template").
TEMPLATE = np.array([[0.302, 0.387], [0.694, 0.380], [0.495, 0.613], [0.338, 0.816], [0.665, 0.812]], np.float32)


def _open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    return open(path, "rb")


def read_fer2013_csv(path: Path, progress: Callable[[int], None] | None = None, limit: int | None = None,
                     skipped: SkipLog | None = None) -> dict[str, np.ndarray]:
    """Rows of fer2013.csv (the first ``limit`` of each Usage when given): ``pixels`` (N, 48, 48, 1) uint8,
    ``emotion`` (N,) int64 (-1 when not a number), ``usage`` (N,) str, ``valid`` (N,) bool, ``row`` (N,)
    the row's position in the file, and ``usage_all`` for every row (FER+ votes align by position)."""
    try:
        with _open_text(path) as fh:
            header = fh.readline().strip().decode("utf-8", "replace").lstrip("\ufeff")
            if header.split(",") != ["emotion", "pixels", "Usage"]:
                raise DataError(f"{path}: expected the FER2013 header 'emotion,pixels,Usage', found '{header[:60]}'")
            lines = fh.read().split(b"\n")
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataError(f"{path} is truncated or not a valid {'gzip' if path.suffix == '.gz' else 'CSV'} file: "
                        f"{exc}") from exc
    if lines and not lines[-1].strip():
        lines.pop()
    usage_all = np.array([line.rsplit(b",", 1)[-1].strip().decode("ascii", "replace") if b"," in line else ""
                          for line in lines], dtype=object)
    if limit is None:
        rows = np.arange(len(lines))
    else:  # the first `limit` rows of each split, so a quick preparation still has val and test faces
        rows = np.concatenate([np.flatnonzero(usage_all == u)[:limit] for u in USAGE_SPLIT])
        rows.sort()
    n = len(rows)
    pixels = np.zeros((n, SIZE, SIZE, 1), dtype=np.uint8)
    emotion = np.full(n, -1, dtype=np.int64)
    valid = np.zeros(n, dtype=bool)
    skipped = skipped if skipped is not None else SkipLog()
    for k, i in enumerate(rows.tolist()):
        parts = lines[i].rstrip(b"\r").split(b",")
        row = f"line {i + 2}"  # the file's line: the header is line 1
        if progress is not None and (k + 1) % 1000 == 0:
            progress(1000)
        if len(parts) != 3:
            skipped.add("malformed row (not 3 columns)", row)
            continue
        values = np.fromstring(parts[1], dtype=np.int32, sep=" ") if parts[1].strip() else np.empty(0, np.int32)
        if values.size != SIZE * SIZE:
            skipped.add(f"pixels: {SIZE * SIZE} values expected", f"{row} has {values.size}")
        elif values.min() < 0 or values.max() > 255:
            skipped.add("pixels outside 0..255", row)
        elif usage_all[i] not in USAGE_SPLIT:
            skipped.add("unknown Usage (not Training/PublicTest/PrivateTest)", f"{row}: {usage_all[i]!r}")
        else:
            pixels[k, :, :, 0] = values.reshape(SIZE, SIZE)
            try:
                emotion[k] = int(parts[0])
            except ValueError:
                emotion[k] = -1
            valid[k] = True
    if progress is not None:
        progress(n % 1000)
    return {"pixels": pixels, "emotion": emotion, "usage": usage_all[rows], "valid": valid, "row": rows,
            "usage_all": usage_all}


def read_ferplus_votes(path: Path, usage: np.ndarray) -> np.ndarray:
    """(N, 10) float32 votes, row-aligned with fer2013.csv; checks the header, row count and Usage column."""
    try:
        text = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is unreadable: {exc}") from exc
    expected = ["Usage", "Image name", *FERPLUS_COLUMNS]
    if not text or text[0].split(",") != expected:
        raise DataError(f"{path}: expected the FER+ header '{','.join(expected)}', found '{(text or [''])[0][:80]}'")
    rows = [r for r in text[1:] if r.strip()]
    if len(rows) != len(usage):
        # rows align by position: one missing row on either side would shift every later face's votes
        raise DataError(f"{path} has {len(rows)} rows but fer2013.csv has {len(usage)}: one of them is truncated "
                        f"or they come from different copies")
    votes = np.zeros((len(usage), len(FERPLUS_COLUMNS)), dtype=np.float32)
    for i in range(len(usage)):
        cells = rows[i].split(",")
        if len(cells) != len(expected):
            raise DataError(f"{path} row {i + 1}: {len(cells)} columns, expected {len(expected)}")
        if usage[i] in USAGE_SPLIT and cells[0] != usage[i]:
            raise DataError(f"{path} row {i + 1}: Usage '{cells[0]}' differs from fer2013.csv ('{usage[i]}'): "
                            f"the two files are not aligned")
        try:
            votes[i] = [float(c) for c in cells[2:]]
        except ValueError as exc:
            raise DataError(f"{path} row {i + 1}: votes must be numbers ({exc})") from exc
    if (votes < 0).any():
        raise DataError(f"{path}: negative vote counts")
    return votes


def ferplus_labels(votes: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(keep mask, hard label, soft target or None) for FER+ votes under a label mode (see the module doc)."""
    v = np.asarray(votes, dtype=np.float64).copy()
    if mode == "plurality":
        top = v.max(axis=1)
        label = v.argmax(axis=1)
        unique = (v == top[:, None]).sum(axis=1) == 1
        return unique & (label < 8) & (top > 0), label, None
    v[v <= 1] = 0  # a single vote is noise (FER+ reference rule)
    total = v.sum(axis=1)
    if mode == "majority":
        label = v.argmax(axis=1)
        return (v.max(axis=1) > 0.5 * total) & (label < 8), label, None
    if mode == "probability":
        emotions = v[:, :8]
        mass = emotions.sum(axis=1)
        keep = mass > 0.5 * total
        soft = np.divide(emotions, mass[:, None], out=np.zeros_like(emotions), where=mass[:, None] > 0)
        return keep, soft.argmax(axis=1), soft.astype(np.float32)
    raise UsageError(f"ferplus: mode must be majority, plurality or probability, not {mode!r}")


class FERPlus(PreparedDataset):
    """FER2013 faces with FER+ crowd labels: 8 emotions, majority / plurality / probability modes."""

    key = "ferplus"
    labels = ("expression",)
    native_channels = 1
    template = TEMPLATE
    stored_size = SIZE

    def __init__(self, data: str | Path | None = None, mode: str = "majority", n_train: int | None = None,
                 n_val: int | None = None, n_test: int | None = None):
        if mode not in ("majority", "plurality", "probability"):
            raise UsageError(f"ferplus: mode must be majority, plurality or probability, not {mode!r}")
        self.mode = mode
        super().__init__(data, n_train=n_train, n_val=n_val, n_test=n_test)

    def selection(self) -> dict[str, Any]:
        return {**super().selection(), "mode": self.mode}

    def select(self, split: str, labels: dict[str, np.ndarray]) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
        keep, hard, soft = ferplus_labels(labels["votes"], self.mode)
        index = np.flatnonzero(keep)
        out = {"expression": hard[index].astype(np.int64)}
        if soft is not None:
            out["expression_probs"] = soft[index]
        return index, out

    @staticmethod
    def read(source: Path, limit: int | None = None, progress: Callable[[int], None] | None = None
             ) -> dict[str, Any]:
        csv_path, votes_path, rows, skipped = _read_source(source, limit, progress, with_votes=True)
        votes = read_ferplus_votes(votes_path, rows["usage_all"])[rows["row"]]
        return _split_rows(rows, {"votes": votes, "fer2013_emotion": rows["emotion"]}, skipped,
                           [csv_path, votes_path], classes={"expression": list(FERPLUS_CLASSES)})


class FER2013(PreparedDataset):
    """FER2013 with its original labels: 7 emotions, grey 48x48 faces."""

    key = "fer2013"
    labels = ("expression",)
    native_channels = 1
    template = TEMPLATE
    stored_size = SIZE

    @staticmethod
    def read(source: Path, limit: int | None = None, progress: Callable[[int], None] | None = None
             ) -> dict[str, Any]:
        csv_path, _, rows, skipped = _read_source(source, limit, progress)
        bad = rows["valid"] & ((rows["emotion"] < 0) | (rows["emotion"] >= len(FER2013_CLASSES)))
        for i in np.flatnonzero(bad):
            skipped.add("emotion label outside 0..6", f"line {rows['row'][i] + 2}")
        rows["valid"] &= ~bad
        return _split_rows(rows, {"expression": rows["emotion"]}, skipped, [csv_path],
                           classes={"expression": list(FER2013_CLASSES)})


def _read_source(source: Path, limit: int | None, progress: Callable[[int], None] | None, with_votes: bool = False
                 ) -> tuple[Path, Path | None, dict[str, np.ndarray], SkipLog]:
    """fer2013.csv(.gz) found under ``source`` (and FER+'s vote file, both located before anything is
    read), its rows, and the log of those left out."""
    csv_path = one_file(source, ("fer2013.csv", "fer2013.csv.gz"), "FER2013")
    votes_path = one_file(source, ("fer2013new.csv",), "FER+") if with_votes else None
    skipped = SkipLog()
    return csv_path, votes_path, read_fer2013_csv(csv_path, progress, limit, skipped), skipped


def _split_rows(rows: dict[str, np.ndarray], labels: dict[str, np.ndarray], skipped: SkipLog, files: list[Path],
                classes: dict[str, list[str]]) -> dict[str, Any]:
    splits = {}
    for usage, split in USAGE_SPLIT.items():
        index = np.flatnonzero(rows["valid"] & (rows["usage"] == usage))
        splits[split] = {"images": rows["pixels"][index], "labels": {k: v[index] for k, v in labels.items()},
                         "rows": rows["row"][index]}
    return {"splits": splits, "skipped": skipped, "files": files, "classes": classes, "notes": {}}
