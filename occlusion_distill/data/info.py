"""``occdistill data info``: what a prepared directory holds, computed from its arrays."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..registry import registry
from .landmarks import SOURCES
from .prepared import read_manifest


def describe(root: Path, dataset_args: dict[str, Any] | None = None) -> dict[str, Any]:
    """Counts per split (and per class), label statistics, landmark sources and template, skips.

    ``dataset_args`` choose faces as a run would (e.g. ``mode=plurality`` for FER+)."""
    root = Path(root)
    manifest = read_manifest(root)
    name = manifest["dataset"]
    dataset, _ = registry("datasets").build(name, **{**(dataset_args or {}), "data": str(root)})
    classes = manifest.get("classes", {})
    splits: dict[str, Any] = {}
    detected = []
    for split, n in manifest["counts"].items():
        entry: dict[str, Any] = {"stored": n}
        labels = dataset._labels(split)
        index, used_labels = dataset.choose(split, labels)
        entry["used"] = n if index is None else int(len(index))
        for label in manifest["labels"]:
            values = used_labels.get(label)
            if values is None:
                continue
            if label in classes:
                counts = np.bincount(values.astype(int), minlength=len(classes[label]))
                entry[label] = {c: int(k) for c, k in zip(classes[label], counts)}
            else:
                v = values.astype(np.float64)
                entry[label] = {"min": float(v.min()), "max": float(v.max()), "mean": round(float(v.mean()), 2),
                                "std": round(float(v.std()), 2)} if len(v) else {}
        try:
            src = np.load(root / f"{split}.landmark_source.npy")
            lms = np.load(root / f"{split}.landmarks.npy")
        except (OSError, ValueError) as exc:
            raise DataError(f"prepared data in {root} is damaged ({exc}): prepare it again") from exc
        entry["landmarks"] = {s: int((src == i).sum()) for i, s in enumerate(SOURCES)}
        detected.append(lms[src == SOURCES.index("mtcnn")])
        splits[split] = entry
    size = manifest["image_size"]
    found = np.concatenate(detected) if detected else np.empty((0, 5, 2))
    return {
        "dataset": name, "root": str(root), "image_size": size, "channels": manifest["channels"],
        "selection": dataset.selection(), "splits": splits,
        "landmarks": {"method": manifest["landmarks"]["method"],
                      "detection_rate": manifest["landmarks"]["detection_rate"],
                      "template": manifest["landmarks"]["template"],
                      "mean_detected": (found.astype(np.float64).mean(axis=0) / size).round(3).tolist() if len(found) else None},
        "skipped": manifest["skipped"], "ignored": manifest.get("ignored", {}), "notes": manifest.get("notes", {}),
        "seconds": manifest["seconds"], "faces_per_s": manifest.get("faces_per_s"),
    }
