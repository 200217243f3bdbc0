"""Counts on the real FER2013 / FER+ / UTKFace copies (``OCCDISTILL_DATA`` or ``../shared/data``).

Skipped, with the reason, when the data is not there; in CI it is.
"""

import os
from pathlib import Path

import numpy as np
import pytest

from occlusion_distill.data.fer import FER2013, FERPlus, ferplus_labels
from occlusion_distill.data.utkface import UTKFace

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("OCCDISTILL_DATA", ROOT.parent / "shared" / "data"))

needs_fer = pytest.mark.skipif(not (DATA / "fer2013" / "fer2013.csv.gz").is_file(),
                               reason=f"FER2013 not found under {DATA} (set OCCDISTILL_DATA)")
needs_utk = pytest.mark.skipif(not (DATA / "utkface" / "train.zip").is_file(),
                               reason=f"UTKFace zips not found under {DATA} (set OCCDISTILL_DATA)")


@pytest.fixture(scope="module")
def ferplus():
    return FERPlus.read(DATA)


@needs_fer
def test_ferplus_majority_counts_match_the_reference_rule(ferplus):
    counts = {s: int(ferplus_labels(p["labels"]["votes"], "majority")[0].sum()) for s, p in ferplus["splits"].items()}
    assert counts == {"train": 25060, "val": 3199, "test": 3153}
    assert ferplus["skipped"].total == 0


@needs_fer
def test_fer2013_counts():
    reading = FER2013.read(DATA)
    assert {s: len(p["images"]) for s, p in reading["splits"].items()} == {"train": 28709, "val": 3589, "test": 3589}


@needs_utk
def test_utkface_provided_split_counts_and_irregular_names():
    reading = UTKFace.read(DATA)
    assert {s: len(p["images"]) for s, p in reading["splits"].items()} == {"train": 18979, "val": 2365, "test": 2364}
    assert reading["notes"]["irregular_names_kept"] == sorted([
        "39_1_20170116174525125.jpg.chip.jpg", "61_1_20170109142408075.jpg.chip.jpg",
        "61_1_20170109150557335.jpg.chip.jpg", "24_0_1_20170116220224657 .jpg.chip.jpg",
        "55_0_0_20170116232725357jpg.chip.jpg"])
    assert reading["skipped"].total == 0 and reading["notes"]["split"] == "provided"


@needs_fer
@needs_utk
@pytest.mark.parametrize("name", ["ferplus", "utkface"])
def test_mtcnn_finds_landmarks_on_real_faces(name, tmp_path):
    from occlusion_distill.data.prepare import prepare

    manifest = prepare(name, DATA, tmp_path / name, landmarks="mtcnn", limit=24)
    assert manifest["landmarks"]["detection_rate"] > 0.6, manifest["landmarks"]
    lm = np.load(tmp_path / name / "test.landmarks.npy")
    eyes_y, mouth_y = lm[:, :2, 1].mean(axis=1), lm[:, 3:, 1].mean(axis=1)
    assert (eyes_y < mouth_y).all()  # upright faces: eyes above the mouth


@needs_fer
@needs_utk
@pytest.mark.parametrize("name,task,distiller", [("utkface", "age", "combined"), ("ferplus", "expression", "triplet")])
def test_distillers_run_on_prepared_real_data(name, task, distiller, tmp_path):
    import json

    from conftest import run_cli
    from occlusion_distill.data.prepare import prepare

    prepare(name, DATA, tmp_path / name, landmarks="template", limit=96)  # small and fast: template landmarks
    out = tmp_path / "run"
    res = run_cli("run", "--dataset", name, "--data", tmp_path / name, "--task", task, "--distiller", distiller,
                  "--occlusion", "mask", "--preset", "smoke", "--epochs", "1", "--quiet", "--out", out)
    assert res.returncode == 0, res.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == name and 0 < metrics["n_train"] <= 96 and np.isfinite(metrics["student"])
