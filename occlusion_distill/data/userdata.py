"""``folder`` and ``csv``: a user's own face images, for any task.

- ``folder``: one sub-folder per class (``ROOT/<class>/*.jpg``), or per split and class
  (``ROOT/{train,val,test}/<class>/*.jpg``). The classes become the labels of ``--arg label=...``
  (default ``expression``; ``gender`` works too).
- ``csv``: a CSV file with a ``path`` column (relative to the CSV's folder, or absolute) and label
  columns named after the tasks: ``expression`` and ``gender`` (class names or 0-based numbers) and
  ``age`` (years); an optional ``split`` column (train / val / test).

Images are centre-cropped to a square and resized to ``size`` (default 112); they should be face crops.
Without a given split, faces get a deterministic split stratified by class (or by decade of age),
80/10/10 by a seeded hash of the path. Unreadable images and bad labels are skipped and counted.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import DataError, UsageError
from ..registry import datasets
from .prepared import PreparedDataset
from .sources import SkipLog, decode_image, stratified_split

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
SPLIT_NAMES = ("train", "val", "test")
CLASS_LABELS = ("expression", "gender")
# A face crop with no landmarks found: eyes at 38% of the height, 30% and 70% across; nose tip at the
# centre; mouth corners at 75% of the height (a typical loosely aligned face crop).
TEMPLATE = np.array([[0.30, 0.38], [0.70, 0.38], [0.50, 0.55], [0.35, 0.75], [0.65, 0.75]], np.float32)


def _decode_all(items: list[tuple[Path, dict[str, Any]]], size: int, channels: int, skipped: SkipLog,
                progress: Callable[[int], None] | None) -> tuple[np.ndarray, list[dict[str, Any]], list[str]]:
    images = np.empty((len(items), size, size, channels), dtype=np.uint8)
    labels, names = [], []
    for path, lab in items:
        try:
            img = decode_image(path.read_bytes(), channels, size)
        except OSError:
            img = None
        if img is None:
            skipped.add("image missing or does not decode", str(path))
        else:
            images[len(labels)] = img
            labels.append(lab)
            names.append(str(path))
        if progress is not None:
            progress(1)
    return images[:len(labels)], labels, names


def _assemble(groups: dict[str, list[tuple[Path, dict[str, Any]]]], label_names: list[str], size: int,
              channels: int, seed: int, skipped: SkipLog, progress, classes: dict[str, list[str]],
              files: list[Path], notes: dict[str, Any]) -> dict[str, Any]:
    decoded = {g: _decode_all(items, size, channels, skipped, progress) for g, items in groups.items()}
    if "all" in decoded:
        images, labels, names = decoded.pop("all")
        key = label_names[0]
        strata = [lab[key] if key != "age" else int(lab[key] // 10) for lab in labels]
        index = stratified_split(names, strata, seed)
        decoded = {s: (images[np.asarray(idx, dtype=int)], [labels[i] for i in idx], [names[i] for i in idx])
                   for s, idx in index.items()}
        notes["split"] = f"stratified by {key}, seed {seed}"
    else:
        notes["split"] = "provided"
    splits = {}
    for split in SPLIT_NAMES:
        images, labels, names = decoded.get(split, (np.empty((0, size, size, channels), np.uint8), [], []))
        arrays = {}
        for name in label_names:
            dtype = np.float32 if name == "age" else np.int64
            arrays[name] = np.array([lab[name] for lab in labels], dtype=dtype)
        splits[split] = {"images": images, "labels": arrays, "names": names}
    return {"splits": splits, "skipped": skipped, "files": files, "classes": classes, "notes": notes,
            "labels": list(label_names)}


def _check_size(size: Any, channels: Any) -> tuple[int, int]:
    if not isinstance(size, int) or size < 32:
        raise UsageError(f"size must be an integer of at least 32 (pixels), not {size!r}")
    if channels not in (1, 3):
        raise UsageError(f"channels must be 1 (grey) or 3 (RGB), not {channels!r}")
    return size, channels


@datasets.register("folder")
class FolderData(PreparedDataset):
    """Your own images in class folders (optionally inside train/val/test folders)."""

    key = "folder"
    labels = ("expression",)
    native_channels = 3
    template = TEMPLATE
    stored_size = 112

    @staticmethod
    def read(source: Path, limit: int | None = None, progress: Callable[[int], None] | None = None,
             label: str = "expression", size: int = 112, channels: int = 3, seed: int = 0) -> dict[str, Any]:
        size, channels = _check_size(size, channels)
        if label not in CLASS_LABELS:
            raise UsageError(f"folder: label must be one of {', '.join(CLASS_LABELS)}, not {label!r}")
        source = Path(source)
        if not source.is_dir():
            raise UsageError(f"folder: --source must be a folder of class folders, not {source}")
        split_dirs = [source / s for s in SPLIT_NAMES if (source / s).is_dir()]
        roots = {s.name: s for s in split_dirs} if split_dirs else {"all": source}
        class_names = sorted({d.name for r in roots.values() for d in r.iterdir()
                              if d.is_dir() and not d.name.startswith(".")})
        if not class_names:
            raise DataError(f"folder: no class folders in {source} (expected {source}/<class>/<image>)")
        groups: dict[str, list[tuple[Path, dict[str, Any]]]] = {}
        for group, root in roots.items():
            items = []
            for c, name in enumerate(class_names):
                folder = root / name
                if folder.is_dir():
                    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
                    items += [(p, {label: c}) for p in files]
            groups[group] = items if limit is None else items[:limit * (3 if group == "all" else 1)]
        if not any(groups.values()):
            raise DataError(f"folder: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in the class folders of {source}")
        return _assemble(groups, [label], size, channels, seed, SkipLog(), progress, {label: class_names},
                         [source], {})


@datasets.register("csv")
class CSVData(PreparedDataset):
    """Your own images listed in a CSV: path plus expression / gender / age columns, optional split."""

    key = "csv"
    labels = ("expression", "gender", "age")
    native_channels = 3
    template = TEMPLATE
    stored_size = 112

    @staticmethod
    def read(source: Path, limit: int | None = None, progress: Callable[[int], None] | None = None,
             size: int = 112, channels: int = 3, seed: int = 0) -> dict[str, Any]:
        size, channels = _check_size(size, channels)
        source = Path(source)
        if source.is_dir():
            found = sorted(source.glob("*.csv"))
            if len(found) != 1:
                raise UsageError(f"csv: --source {source} must be a CSV file, or a folder with exactly one CSV")
            source = found[0]
        try:
            with open(source, newline="", encoding="utf-8-sig") as fh:
                rows = list(csv.DictReader(fh))
                columns = list(rows[0].keys()) if rows else []
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise DataError(f"csv: cannot read {source}: {exc}") from exc
        if "path" not in columns:
            raise DataError(f"csv: {source} needs a 'path' column; it has {', '.join(columns) or 'none'}")
        label_names = [c for c in ("expression", "gender", "age") if c in columns]
        if not label_names:
            raise DataError(f"csv: {source} needs at least one label column: expression, gender or age")
        skipped = SkipLog()
        classes: dict[str, list[str]] = {}
        for name in label_names:
            if name == "age":
                continue
            values = sorted({r[name].strip() for r in rows if r[name].strip()})
            numeric = bool(values) and all(re.fullmatch(r"-?\d+", v) for v in values)
            if numeric:  # 0-based class numbers; a negative one is out of range (skipped below)
                top = max(int(v) for v in values)
                classes[name] = [str(i) for i in range(top + 1)] if top >= 0 else []
            else:
                classes[name] = values
        groups: dict[str, list[tuple[Path, dict[str, Any]]]] = {}
        has_split = "split" in columns
        for k, row in enumerate(rows):
            where = f"row {k + 2}"
            lab: dict[str, Any] = {}
            for name in label_names:
                value = (row.get(name) or "").strip()
                if name == "age":
                    try:
                        age = float(value)
                    except ValueError:
                        age = math.nan
                    if not (0 <= age <= 120):
                        skipped.add("age missing or outside 0..120", where)
                        break
                    lab[name] = age
                elif value not in classes[name]:
                    out_of_range = re.fullmatch(r"-?\d+", value) is not None
                    skipped.add(f"{name} {'out of range' if out_of_range else 'missing'}", where)
                    break
                else:
                    lab[name] = classes[name].index(value)
            else:
                group = (row.get("split") or "").strip().lower() if has_split else "all"
                if has_split and group not in SPLIT_NAMES:
                    skipped.add("split not train/val/test", where)
                    continue
                path = Path(row["path"].strip())
                groups.setdefault(group, []).append((path if path.is_absolute() else source.parent / path, lab))
        if limit is not None:
            groups = {g: items[:limit * (3 if g == "all" else 1)] for g, items in groups.items()}
        if not any(groups.values()):
            raise DataError(f"csv: no usable rows in {source}")
        return _assemble(groups, label_names, size, channels, seed, skipped, progress, classes, [source], {})
