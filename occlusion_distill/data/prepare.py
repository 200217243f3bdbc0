"""``occdistill data prepare``: read a data set's official files once, add landmarks, write prepared data.

The output directory appears only when complete (written under a temporary name, then renamed), so an
interrupted preparation leaves nothing half-written. Preparing again with the same source files and
options finds the existing directory and does nothing (the manifest records both).
"""

from __future__ import annotations

import datetime
import inspect
import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..errors import DataError, UsageError
from ..registry import registry
from .landmarks import SOURCES, add_landmarks
from ..io import file_digest
from .prepared import FORMAT_VERSION, MANIFEST
from .sources import EXTRACTED, SkipLog, is_leftover


def _source_files(files: list[Path]) -> list[dict[str, Any]]:
    out = []
    for f in files:
        f = EXTRACTED.get(Path(f), Path(f))  # a file read out of a zip: the zip is the source
        if f.is_file():
            out.append({"path": str(f.resolve()), "bytes": f.stat().st_size, "sha256": file_digest(f)})
        else:  # a folder of images: its listing stands for it
            names = sorted(str(p.relative_to(f)) for p in f.rglob("*")
                           if p.is_file() and not is_leftover(p.relative_to(f)))
            out.append({"path": str(f.resolve()), "files": len(names),
                        "bytes": sum((f / n).stat().st_size for n in names)})
    return out


def _empty_splits_message(name: str, source: Path, splits: dict[str, Any], empty: list[str],
                          skipped: SkipLog) -> str:
    """Why some split has no faces: none were usable at all (say why each was skipped), or too few."""
    which = f"the {', '.join(empty)} split{'s' if len(empty) > 1 else ''}"
    why = skipped.describe()
    total = sum(len(part["images"]) for part in splits.values())
    if total == 0:
        return f"'{name}' under {source}: no usable faces (skipped: {why or 'no face images found'})"
    return (f"'{name}' under {source}: {total} usable faces, but {which} got none"
            f"{' (skipped: ' + why + ')' if why else ''}: each of train, val and test needs at least one face")


def prepare(name: str, source: Path, out: Path, *, landmarks: str = "auto", limit: int | None = None,
            overwrite: bool = False, reporter: Any = None, device: str = "cpu",
            read_args: dict[str, Any] | None = None) -> dict[str, Any]:
    """Prepare data set ``name`` from ``source`` into ``out``; returns the manifest.

    ``read_args`` go to the data set's reader (e.g. ``label``, ``size`` and ``seed`` for ``folder``)."""
    if landmarks not in ("auto", *SOURCES):
        raise UsageError(f"--landmarks must be auto, {', '.join(SOURCES)}, not {landmarks!r}")
    if limit is not None and limit < 1:
        raise UsageError("--limit must be at least 1")
    cls = registry("datasets").get(name).obj
    if not hasattr(cls, "read"):
        raise UsageError(f"data set '{name}' has nothing to prepare (it is built in or reads its own files)")
    source, out = Path(source).resolve(), Path(out).resolve()
    if out == source or out in source.parents:
        raise UsageError(f"--out {out} is --source or holds it: choose another directory")
    read_args = dict(read_args or {})
    try:
        inspect.signature(cls.read).bind(source, **read_args)
    except TypeError as exc:
        raise UsageError(f"data set '{name}' does not accept these --arg options: {exc}") from exc
    options = {"landmarks": landmarks, "limit": limit, **read_args}
    old = None
    if out.exists():
        if not out.is_dir():
            raise UsageError(f"--out {out} is a file: give a directory")
        if (out / MANIFEST).is_file():
            try:
                old = json.loads((out / MANIFEST).read_text())
            except (OSError, json.JSONDecodeError):
                old = {}
        elif any(out.iterdir()):  # never replace a folder that is not ours, --overwrite or not
            raise UsageError(f"--out {out} exists and is not prepared data: choose another directory")
    for stale in out.parent.glob(f".{out.name}.tmp-*"):  # left by a preparation that was killed
        shutil.rmtree(stale, ignore_errors=True)
    t0 = time.perf_counter()

    read_bar = reporter.stage("read", None) if reporter else None
    reading = cls.read(source, limit=limit, progress=read_bar.advance if read_bar else None, **read_args)
    if read_bar:
        read_bar.close()
    source_files = _source_files(reading["files"])
    if old is not None:
        if old.get("dataset") == name and old.get("options") == options and \
                old.get("source", {}).get("files") == source_files:
            if reporter:
                reporter.info(f"{out} already holds '{name}' prepared from these files with these options")
            return old
        if not overwrite:
            raise UsageError(f"{out} already holds prepared data from other files or options: pass --overwrite "
                             f"to replace it, or choose another --out")
    splits = reading["splits"]
    skipped = reading["skipped"]
    ignored = reading.get("ignored") or SkipLog()  # files that are not faces at all (archive leftovers)
    empty = [s for s, part in splits.items() if len(part["images"]) == 0]
    if empty:
        raise DataError(_empty_splits_message(name, source, splits, empty, skipped))
    has_given = all("landmarks" in part for part in splits.values())
    if landmarks == "auto":
        landmarks = "given" if has_given else "mtcnn"
    elif landmarks == "given" and not has_given:
        raise UsageError(f"data set '{name}' has no landmarks of its own: use --landmarks mtcnn or template")
    total = sum(len(s["images"]) for s in splits.values())
    t_read = time.perf_counter() - t0

    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        detector = None
        if landmarks == "mtcnn":
            from .landmarks import Detector

            detector = Detector(device=device)
        lm_bar = reporter.stage("landmarks", total) if reporter else None
        t1 = time.perf_counter()
        sources: dict[str, dict[str, int]] = {}
        checksums: dict[str, str] = {}
        counts: dict[str, int] = {}
        label_arrays = sorted(next(iter(splits.values()))["labels"])
        first = next(iter(splits.values()))["images"]
        done = 0
        for split, part in splits.items():
            images = np.ascontiguousarray(part["images"])
            lms = np.zeros((len(images), 5, 2), dtype=np.float32)
            used = np.zeros(len(images), dtype=np.uint8)

            def tick(n: int) -> None:
                nonlocal done
                done += n
                if lm_bar:
                    lm_bar.advance(n)
                    lm_bar.note(f"{done / max(time.perf_counter() - t1, 1e-9):.0f} faces/s")

            if landmarks == "given":
                lms[:] = part["landmarks"]
                used[:] = SOURCES.index("given")
                sources[split] = {**dict.fromkeys(SOURCES, 0), "given": len(images)}
                tick(len(images))
            elif len(images):
                sources[split] = add_landmarks(images, cls.template, landmarks, lms, progress=tick,
                                               detector=detector, used=used)
            else:
                sources[split] = dict.fromkeys(SOURCES, 0)
            arrays = {"images": images, "landmarks": lms, "landmark_source": used, **part["labels"]}
            for key, arr in arrays.items():
                path = tmp / f"{split}.{key}.npy"
                np.save(path, arr)
                checksums[path.name] = file_digest(path)
            if part.get("names") is not None:
                (tmp / f"{split}.names.txt").write_text("\n".join(part["names"]) + "\n")
            counts[split] = len(images)
        if lm_bar:
            lm_bar.close()
        t_lm = time.perf_counter() - t1
        detected = sum(s["mtcnn"] for s in sources.values())
        manifest = {
            "format": FORMAT_VERSION, "dataset": name, "options": options,
            "labels": list(reading.get("labels") or cls.labels),  # what tasks can use (after selection)
            "label_arrays": label_arrays, "classes": reading["classes"], "channels": int(first.shape[-1]),
            "image_size": int(first.shape[1]), "counts": counts,
            "skipped": reading["skipped"].as_dict(), "skipped_total": reading["skipped"].total,
            "ignored": ignored.as_dict(), "ignored_total": ignored.total,
            "notes": reading["notes"],
            "landmarks": {"method": landmarks, "per_split": sources,
                          "detection_rate": round(detected / total, 4) if landmarks == "mtcnn" else None,
                          "template": np.asarray(cls.template).round(4).tolist()},
            "seconds": {"read": round(t_read, 1), "landmarks": round(t_lm, 1),
                        "total": round(time.perf_counter() - t0, 1)},
            "faces_per_s": round(total / max(time.perf_counter() - t0, 1e-9), 1),
            "source": {"given": str(source), "files": source_files},
            "prepared_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "checksums": checksums,
            "made_by": {"occlusion_distill": __version__, "python": platform.python_version()},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if out.exists():
            trash = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, trash)
            os.replace(tmp, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest
