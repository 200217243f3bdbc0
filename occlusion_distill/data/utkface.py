"""``utkface``: UTKFace aligned crops, labels read from file names ``age_gender_race_date.jpg.chip.jpg``.

Files are read from folders or zips. A provided split (``train``/``val``/``test`` zips or folders,
as in ``../shared/data/utkface``) is used as it is; otherwise the faces get a deterministic split
stratified by (age bin, gender), 80/10/10 by a seeded hash of the name, with byte-identical files kept
together in the split of their first name.

Names are parsed leniently (``^(\\d+)_(\\d+)_(?:(\\d+)_)?(\\d+)\\s*\\.?jpg\\.chip\\.jpg$``): a name that strays
from the pattern but still carries age and gender (missing race, a stray space, a missing dot) is kept
and listed in the manifest as irregular; a name without a usable age or gender is skipped and counted
by reason, and so is an image that does not decode.
"""

from __future__ import annotations

import hashlib
import re
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import DataError, UsageError
from .prepared import PreparedDataset
from .sources import SkipLog, decode_image, is_leftover, search, stratified_split

LENIENT = re.compile(r"^(\d+)_(\d+)_(?:(\d+)_)?(\d+)\s*\.?jpg\.chip\.jpg$")
REGULAR = re.compile(r"^(\d+)_(\d+)_(\d+)_(\d+)\.jpg\.chip\.jpg$")
SUFFIX = ".chip.jpg"
GENDERS = ("male", "female")
MAX_AGE = 120
AGE_BINS = (0, 3, 10, 20, 30, 40, 50, 60, 70, 200)
SIZE = 100
# Where MTCNN puts the 5 points on UTKFace's aligned crops, relative to the crop: the mean over the
# 23,657 faces it found in all splits (`occdistill data info DIR` prints it as "landmark template").
TEMPLATE = np.array([[0.250, 0.205], [0.712, 0.202], [0.478, 0.473], [0.274, 0.674], [0.688, 0.676]], np.float32)


def parse_name(name: str) -> tuple[dict[str, int] | None, str]:
    """Labels from a file name and how it was read: 'regular', 'irregular', or the reason it is unusable."""
    base = name.rsplit("/", 1)[-1]
    m = LENIENT.match(base)
    if not m:
        return None, "name does not carry age and gender"
    age, gender, race = int(m.group(1)), int(m.group(2)), m.group(3)
    if age > MAX_AGE:
        return None, f"age above {MAX_AGE}"
    if gender not in (0, 1):
        return None, "gender not 0 (male) or 1 (female)"
    labels = {"age": age, "gender": gender, "race": int(race) if race is not None else -1}
    return labels, "regular" if REGULAR.match(base) else "irregular"


class _Member:
    """One image file, in a folder or a zip."""

    def __init__(self, name: str, path: Path, inner: str | None = None):
        self.name, self.path, self.inner = name, path, inner

    def read(self, archives: dict[Path, zipfile.ZipFile]) -> bytes:
        if self.inner is None:
            return self.path.read_bytes()
        if self.path not in archives:
            archives[self.path] = zipfile.ZipFile(self.path)
        return archives[self.path].read(self.inner)


def _members(path: Path) -> list[_Member]:
    if path.suffix == ".zip":
        try:
            with zipfile.ZipFile(path) as z:
                return [_Member(Path(i).name, path, i) for i in z.namelist()
                        if i.endswith(SUFFIX) and not is_leftover(i)]
        except zipfile.BadZipFile as exc:
            raise DataError(f"{path} is not a valid zip file: {exc}") from exc
    return [_Member(p.name, p) for p in sorted(path.rglob(f"*{SUFFIX}")) if not is_leftover(p.relative_to(path))]


def locate(source: Path) -> tuple[dict[str, list[_Member]] | None, list[_Member], list[Path]]:
    """(provided split or None, all members when not split, files used). Looks for split zips/folders first."""
    source = Path(source)
    if not source.exists():
        raise UsageError(f"--source {source} does not exist")
    if source.is_file():
        if source.suffix != ".zip":
            raise UsageError(f"--source {source}: give a folder or a zip of UTKFace files")
        members = _members(source)
        if not members:
            raise DataError(f"no UTKFace files (*{SUFFIX}) in {source}: is this the UTKFace data?")
        return None, members, [source]
    for holder in [source, *sorted(p for p in source.iterdir() if p.is_dir())]:
        parts = {s: [holder / f"{s}.zip", holder / s] for s in ("train", "val", "test")}
        chosen = {s: next((p for p in cands if p.exists()), None) for s, cands in parts.items()}
        if any(chosen.values()) and not all(chosen.values()):
            missing = [s for s, p in chosen.items() if p is None]
            raise DataError(f"{holder} has a {'/'.join(s for s, p in chosen.items() if p)} split of UTKFace but no "
                            f"{' or '.join(missing)} (zip or folder): give all three, or a folder of unsplit faces")
        if all(chosen.values()):
            split = {s: _members(p) for s, p in chosen.items()}
            if any(split.values()):
                return split, [], [p for p in chosen.values() if p is not None]
    files = search(source, lambda p: p.name.endswith(SUFFIX), "UTKFace")
    if not files:
        raise DataError(f"no UTKFace files (*{SUFFIX}, or train/val/test zips of them) under {source}: "
                        f"is this the UTKFace data?")
    return None, [_Member(p.name, p) for p in files], [source]


class UTKFace(PreparedDataset):
    """UTKFace aligned crops: age (years) and gender from the file names, RGB."""

    key = "utkface"
    labels = ("age", "gender")
    native_channels = 3
    template = TEMPLATE
    stored_size = SIZE

    @staticmethod
    def read(source: Path, limit: int | None = None, progress: Callable[[int], None] | None = None,
             seed: int = 0) -> dict[str, Any]:
        provided, members, files = locate(source)
        skipped = SkipLog(limit=50)
        irregular: list[str] = []
        groups = provided if provided is not None else {"all": members}
        decoded: dict[str, dict[str, Any]] = {}
        archives: dict[Path, zipfile.ZipFile] = {}
        try:
            for group, items in groups.items():
                items = items if limit is None else items[:limit * (3 if group == "all" else 1)]
                images = np.empty((len(items), SIZE, SIZE, 3), dtype=np.uint8)
                kept, labels, names, digests = [], [], [], []
                for k, member in enumerate(items):
                    lab, how = parse_name(member.name)
                    if lab is None:
                        skipped.add(how, member.name)
                    else:
                        data = member.read(archives)
                        img = decode_image(data, 3, SIZE)
                        if img is None:
                            skipped.add("image does not decode", member.name)
                        else:
                            if how == "irregular":
                                irregular.append(member.name)
                            images[len(kept)] = img
                            kept.append(k)
                            labels.append(lab)
                            names.append(member.name)
                            digests.append(hashlib.sha256(data).hexdigest())
                    if progress is not None:
                        progress(1)
                decoded[group] = {"images": images[:len(kept)], "labels": labels, "names": names,
                                  "digests": digests}
        except (OSError, zipfile.BadZipFile) as exc:
            raise DataError(f"reading UTKFace under {source} failed: {exc}") from exc
        finally:
            for z in archives.values():
                z.close()
        if provided is None:
            everything = decoded.pop("all")
            strata = [(int(np.digitize(lab["age"], AGE_BINS)), lab["gender"]) for lab in everything["labels"]]
            index = stratified_split(everything["names"], strata, seed, everything["digests"])
            decoded = {s: {k: ([v[i] for i in idx] if isinstance(v, list) else v[np.asarray(idx, dtype=int)])
                           for k, v in everything.items()} for s, idx in index.items()}
        splits = {}
        for split, d in decoded.items():
            labels = d["labels"]
            splits[split] = {
                "images": d["images"],
                "labels": {"age": np.array([l["age"] for l in labels], dtype=np.float32),
                           "gender": np.array([l["gender"] for l in labels], dtype=np.int64),
                           "race": np.array([l["race"] for l in labels], dtype=np.int64)},
                "names": d["names"]}
        return {"splits": splits, "skipped": skipped, "files": files, "classes": {"gender": list(GENDERS)},
                "notes": {"irregular_names_kept": sorted(irregular),
                          "split": "provided" if provided is not None else f"stratified by (age bin, gender), seed {seed}"}}
