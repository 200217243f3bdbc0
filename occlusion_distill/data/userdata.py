"""``folder`` and ``csv``: a user's own face images, for any task.

- ``folder``: one sub-folder per class (``ROOT/<class>/*.jpg``), or per split and class
  (``ROOT/{train,val,test}/<class>/*.jpg``). The classes become the labels of ``--arg label=...``
  (default ``expression``; ``gender`` works too).
- ``csv``: a CSV file with a ``path`` column (relative to the CSV's folder, or absolute) and label
  columns named after the tasks: ``expression`` and ``gender`` (class names or 0-based numbers) and
  ``age`` (years); an optional ``split`` column (train / val / test).

Images are centre-cropped to a square and resized to ``size`` (default 112); they should be face crops.
Without a given split, faces get a deterministic split stratified by class (or by decade of age),
80/10/10 by a seeded hash of the path (so at least 10 usable faces). Unreadable images and unusable
rows are skipped and counted by reason; archive and OS leftovers (``__MACOSX``, ``._*``, ``.DS_Store``,
...) are ignored and counted apart. A CSV may come from a spreadsheet in any locale: UTF-8 (BOM or
not), UTF-16 or Windows-1252; ``,``, ``;``, tab or ``|`` between columns; a decimal comma in ages.
See docs/datasets.md for every rule.
"""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import DataError, UsageError
from .prepared import PreparedDataset
from .sources import LEFTOVER_REASON, SkipLog, decode_image, is_leftover, stratified_split

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
SPLIT_NAMES = ("train", "val", "test")
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "test": "test", "testing": "test"}  # folder names and 'split' cells, in any case
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
            reason = "image does not decode"
        except (OSError, ValueError):  # ValueError: a NUL character in the path
            img, reason = None, "image file not found or unreadable"
        if img is None:
            skipped.add(reason, str(path))
        else:
            images[len(labels)] = img
            labels.append(lab)
            names.append(str(path))
        if progress is not None:
            progress(1)
    return images[:len(labels)], labels, names


def _assemble(groups: dict[str, list[tuple[Path, dict[str, Any]]]], label_names: list[str], size: int,
              channels: int, seed: int, skipped: SkipLog, progress, classes: dict[str, list[str]],
              files: list[Path], notes: dict[str, Any], *, source: Path,
              ignored: SkipLog | None = None) -> dict[str, Any]:
    decoded = {g: _decode_all(items, size, channels, skipped, progress) for g, items in groups.items()}
    if "all" in decoded:
        images, labels, names = decoded.pop("all")
        key = label_names[0]
        strata = [lab[key] if key != "age" else int(lab[key] // 10) for lab in labels]
        index = stratified_split(names, strata, seed)
        decoded = {s: (images[np.asarray(idx, dtype=int)], [labels[i] for i in idx], [names[i] for i in idx])
                   for s, idx in index.items()}
        notes["split"] = f"stratified by {key}, seed {seed}"
        _check_split_sizes(decoded, source, SPLIT_DEAL, skipped)
    else:
        notes["split"] = "provided"
        _check_split_sizes(decoded, source, None, skipped)
    splits = {}
    for split in SPLIT_NAMES:
        images, labels, names = decoded.get(split, (np.empty((0, size, size, channels), np.uint8), [], []))
        arrays = {}
        for name in label_names:
            dtype = np.float32 if name == "age" else np.int64
            arrays[name] = np.array([lab[name] for lab in labels], dtype=dtype)
        splits[split] = {"images": images, "labels": arrays, "names": names}
    return {"splits": splits, "skipped": skipped, "files": files, "classes": classes, "notes": notes,
            "labels": list(label_names), "ignored": ignored if ignored is not None else SkipLog()}


#: how ``stratified_split`` deals faces in turn (train, val, test): the first val face is the 9th, the
#: first test face the 10th, so a source this reader splits itself needs at least 10 usable faces
SPLIT_DEAL = (8, 1, 1)


def _check_split_sizes(decoded: dict[str, tuple], source: Path, deal: tuple[int, int, int] | None,
                       skipped: SkipLog) -> None:
    """One clear error when faces were read but some split got none: the cause is too few faces (or an
    empty provided split), not faces that were not found."""
    total = sum(len(d[0]) for d in decoded.values())
    empty = [s for s in SPLIT_NAMES if len(decoded.get(s, ((),))[0]) == 0]
    if total == 0 or not empty:
        return  # nothing usable at all: prepare() names the skip reasons
    which = f"the {' and '.join(empty)} split{'s' if len(empty) > 1 else ''}"
    why = f" (skipped: {skipped.describe()})" if skipped.total else ""
    if deal is not None:
        need = sum(deal)
        raise DataError(f"{source}: {total} usable face{'s' if total != 1 else ''}{why}, too few to split: {which} "
                        f"got none. Faces are dealt {deal[0]} train : {deal[1]} val : {deal[2]} test, so every split "
                        f"gets a face only from {need} faces on: add faces, or give the split yourself "
                        f"(train/val/test folders, or a 'split' column)")
    raise DataError(f"{source}: {which} {'have' if len(empty) > 1 else 'has'} no usable faces "
                    f"({total} in the others){why}: each of train, val and test needs at least one")


def _check_size(size: Any, channels: Any) -> tuple[int, int]:
    if not isinstance(size, int) or size < 32:
        raise UsageError(f"size must be an integer of at least 32 (pixels), not {size!r}")
    if channels not in (1, 3):
        raise UsageError(f"channels must be 1 (grey) or 3 (RGB), not {channels!r}")
    return size, channels


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
        folders = [d for d in source.iterdir() if d.is_dir() and not is_leftover(d.name)]
        split_dirs = {d: SPLIT_ALIASES[d.name.lower()] for d in folders if d.name.lower() in SPLIT_ALIASES}
        if split_dirs and len(split_dirs) != len(folders):
            others = sorted(d.name for d in folders if d not in split_dirs)
            raise DataError(f"folder: {source} mixes split folders ({', '.join(sorted(d.name for d in split_dirs))}) "
                            f"with other folders ({', '.join(others[:5])}): use <split>/<class>/ or <class>/ throughout")
        if len(set(split_dirs.values())) != len(split_dirs):
            raise DataError(f"folder: {source} has two folders for one split: {', '.join(sorted(d.name for d in split_dirs))}")
        roots = {split: d for d, split in split_dirs.items()} if split_dirs else {"all": source}
        ignored = SkipLog()
        class_names = sorted({d.name for r in roots.values() for d in r.iterdir()
                              if d.is_dir() and not is_leftover(d.name)})
        if not class_names:
            raise DataError(f"folder: no class folders in {source} (expected {source}/<class>/<image>)")
        if len(class_names) == 1:  # often an archive's wrapper folder: every face would get one label
            raise DataError(f"folder: only one class folder, '{class_names[0]}', in {source}: a class needs another "
                            f"to be told apart from (if it holds the class folders, point --source at it)")
        groups: dict[str, list[tuple[Path, dict[str, Any]]]] = {}
        for group, root in roots.items():
            items = []
            for c, name in enumerate(class_names):
                folder = root / name
                if not folder.is_dir():
                    continue
                for p in sorted(folder.rglob("*")):
                    if not p.is_file() or p.suffix.lower() not in IMAGE_SUFFIXES:
                        continue
                    if is_leftover(p.relative_to(folder)):
                        ignored.add(LEFTOVER_REASON, str(p))
                    else:
                        items.append((p, {label: c}))
            groups[group] = items if limit is None else items[:limit * (3 if group == "all" else 1)]
        if not any(groups.values()):
            raise DataError(f"folder: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in the class folders of {source}")
        return _assemble(groups, [label], size, channels, seed, SkipLog(), progress, {label: class_names},
                         [source], {}, ignored=ignored, source=source)


DELIMITERS = (",", ";", "\t", "|")  # what spreadsheets write in the locales that do not use ','
INTEGER = re.compile(r"-?\d+(?:[.,]0+)?")  # class numbers, also as a spreadsheet writes them: 1.0 or 1,0
DECIMAL_COMMA = re.compile(r"\d+,\d+")
MISSING = {"na", "n/a", "#n/a", "nan", "null", "none", "-", "?"}  # what spreadsheets and pandas write for none


def _decode_text(raw: bytes, source: Path) -> tuple[str, str]:
    """The text of a CSV file and its encoding: UTF-8 (with or without BOM), UTF-16 with a BOM (Excel's
    "Unicode text"), or Windows-1252 (Excel's "CSV" in Western European locales)."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        encodings = ("utf-16",)
    else:
        encodings = ("utf-8-sig", "cp1252")
    for encoding in encodings:
        try:
            return raw.decode(encoding), encoding
        except UnicodeDecodeError:
            continue
    raise DataError(f"csv: {source} is not UTF-8, UTF-16 or Windows-1252 text: save it as 'CSV UTF-8'")


def _read_table(source: Path) -> tuple[list[str], list[tuple[int, list[str]]], dict[str, str]]:
    """(header, [(line, cells)], how it was read) of a CSV file whose header has a ``path`` column.

    The delimiter is the one of ``DELIMITERS`` that makes ``path`` a column of the header: the header's
    required column tells it exactly, where sniffing the rows could be fooled by a comma in a name."""
    try:
        raw = source.read_bytes()
    except OSError as exc:
        raise DataError(f"csv: cannot read {source}: {exc}") from exc
    text, encoding = _decode_text(raw, source)
    first = next((line for line in text.splitlines() if line.strip()), "")
    delimiter = None
    for d in DELIMITERS:
        if "path" in (c.strip().lower() for c in next(csv.reader([first], delimiter=d), [])):
            delimiter = d
            break
    if delimiter is None:
        cells = [c.strip() for c in next(csv.reader([first]), [])]
        raise DataError(f"csv: {source} needs a 'path' column; its header, read with ',' between columns, has "
                        f"{', '.join(cells) or 'nothing'} (';', tab and '|' between columns are understood too)")
    # strict: an unclosed quote is an error, not a cell that swallows the rest of the file
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    rows: list[tuple[int, list[str]]] = []
    header: list[str] | None = None
    try:
        for cells in reader:
            if header is None:
                if any(c.strip() for c in cells):
                    header = [c.strip().lower() for c in cells]
                    while header and not header[-1]:  # a trailing delimiter is not a column
                        header.pop()
                continue
            rows.append((reader.line_num, cells))
    except csv.Error as exc:
        raise DataError(f"csv: {source} line {reader.line_num}: {exc} (an unclosed quote?)") from exc
    assert header is not None  # the delimiter was found in it
    twice = sorted({c for c in header if c and header.count(c) > 1})
    if twice:
        raise DataError(f"csv: {source} has the column{'s' if len(twice) > 1 else ''} {', '.join(twice)} more than once")
    name = {"\t": "tab"}.get(delimiter, repr(delimiter))
    return header, rows, {"encoding": encoding, "delimiter": name}


def _integer(value: str) -> int:
    """A class number as ``INTEGER`` matches it: ``3``, ``3.0`` or ``3,0``."""
    return int(re.split(r"[.,]", value)[0])


def _age(value: str) -> tuple[float | None, str]:
    """Years from a cell, or None and why not. A decimal comma (``23,5``, as spreadsheets write it in
    most of Europe) is a decimal point: an age has no thousands to separate."""
    if not value or value.lower() in MISSING:
        return None, "age missing"
    if DECIMAL_COMMA.fullmatch(value):
        value = value.replace(",", ".")
    try:
        age = float(value)
    except ValueError:
        return None, "age not a number"
    if not math.isfinite(age):
        return None, "age not a number"
    if not 0 <= age <= 120:
        return None, "age outside 0..120"
    return age, ""


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
            found = sorted(p for p in source.iterdir() if p.suffix.lower() == ".csv" and p.is_file()
                           and not is_leftover(p.name))
            if len(found) != 1:
                raise UsageError(f"csv: --source {source} must be a CSV file, or a folder with exactly one CSV")
            source = found[0]
        header, table, how = _read_table(source)
        label_names = [c for c in ("expression", "gender", "age") if c in header]
        if not label_names:
            raise DataError(f"csv: {source} needs at least one label column: expression, gender or age; it has "
                            f"{', '.join(c for c in header if c)}")
        col = {c: header.index(c) for c in ("path", "split", *label_names) if c in header}
        skipped = SkipLog()
        width = len(header)
        rows: list[tuple[str, dict[str, str]]] = []  # (where, cell of each used column), well-formed rows
        for line, cells in table:
            where = f"line {line}"
            if not any(c.strip() for c in cells):
                skipped.add("blank row", where)
            elif len(cells) < width:
                skipped.add("fewer cells than the header has columns", where)
            elif len(cells) > width and any(c.strip() for c in cells[width:]):
                skipped.add(f"more cells than the header has columns (a {how['delimiter']} inside an unquoted "
                            f"cell?)", where)
            elif any("\n" in c or "\r" in c for c in cells):
                skipped.add("a cell spans lines (a stray quote?)", where)
            elif [c.strip().lower() for c in cells[:width]] == header:
                skipped.add("the header repeated", where)
            elif not cells[col["path"]].strip():
                skipped.add("path missing", where)
            elif "\x00" in cells[col["path"]]:
                skipped.add("path holds a NUL character", where)
            else:
                rows.append((where, {c: cells[i].strip() for c, i in col.items()}))
        # labels and split are checked before the classes are named, so that a row left out adds no class
        kept: list[tuple[str, dict[str, Any]]] = []
        for where, row in rows:
            reason = ""
            for name in label_names:
                if name == "age":
                    row["age"], reason = _age(row["age"])
                elif not row[name] or row[name].lower() in MISSING:
                    reason = f"{name} missing"
                if reason:
                    break
            if not reason and "split" in row and row["split"].lower() not in SPLIT_ALIASES:
                reason = "split missing or not train/val/test"
            if reason:
                skipped.add(reason, where)
            else:
                kept.append((where, row))
        classes: dict[str, list[str]] = {}
        numbered: set[str] = set()  # label columns of 0-based class numbers rather than class names
        for name in label_names:
            if name == "age":
                continue
            values = sorted({r[name] for _, r in kept})
            numbers = [v for v in values if INTEGER.fullmatch(v)]
            if numbers and len(numbers) < len(values):  # a typo would otherwise renumber every class
                words = [v for v in values if not INTEGER.fullmatch(v)]
                raise DataError(f"csv: the {name} column of {source} mixes class numbers ({', '.join(numbers[:3])}) "
                                f"and names ({', '.join(words[:3])}): use one or the other")
            if numbers:
                numbered.add(name)
                top = max(_integer(v) for v in values)
                classes[name] = [str(i) for i in range(top + 1)] if top >= 0 else []
            else:
                classes[name] = values
        groups: dict[str, list[tuple[Path, dict[str, Any]]]] = {}
        for where, row in kept:
            lab: dict[str, Any] = {}
            for name in label_names:
                value = row[name]
                if name != "age":
                    value = str(_integer(value)) if name in numbered else value
                    if value not in classes[name]:
                        skipped.add(f"{name} out of range", where)  # a negative class number
                        break
                    value = classes[name].index(value)
                lab[name] = value
            else:
                group = SPLIT_ALIASES[row["split"].lower()] if "split" in row else "all"
                path = Path(row["path"])
                if not path.is_absolute():
                    path = source.parent / path
                if "\\" in row["path"] and not path.exists():  # written on Windows
                    path = Path(row["path"].replace("\\", "/"))
                    path = path if path.is_absolute() else source.parent / path
                groups.setdefault(group, []).append((path, lab))
        if limit is not None:
            groups = {g: items[:limit * (3 if g == "all" else 1)] for g, items in groups.items()}
        if not any(groups.values()):
            raise DataError(f"csv: no usable rows in {source} (skipped: {skipped.describe() or 'it has no rows'})")
        return _assemble(groups, label_names, size, channels, seed, skipped, progress, classes, [source],
                         {"read": f"{how['encoding']}, {how['delimiter']} between columns"}, source=source)
