"""Real data set readers on generated fixtures in their official formats, and prepared data."""

import csv
import gzip
import json
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from occlusion_distill.data.fer import FERPLUS_COLUMNS, FERPlus, FER2013, ferplus_labels
from occlusion_distill.data.prepare import prepare
from occlusion_distill.data.synthfaces import generate
from occlusion_distill.errors import DataError, UsageError
from occlusion_distill.registry import registry

from conftest import run_main

USAGES = ["Training"] * 30 + ["PublicTest"] * 10 + ["PrivateTest"] * 10


def _faces(n, size, channels=3, seed=0):
    return generate(n, size, channels=channels, seed=seed)


def write_fer(root: Path, gz: bool = True, bad_rows: bool = True) -> Path:
    """A fer2013.csv(.gz) + fer2013new.csv pair of 50 rows, with known votes and a few broken rows."""
    root.mkdir(parents=True, exist_ok=True)
    faces = _faces(50, 48, channels=1)
    lines = ["emotion,pixels,Usage"]
    vote_lines = ["Usage,Image name," + ",".join(FERPLUS_COLUMNS)]
    for i, usage in enumerate(USAGES):
        pixels = " ".join(map(str, faces.images[i].ravel()))
        emotion = i % 7
        if bad_rows and i == 3:
            pixels = "1 2 3"  # too few values
        if bad_rows and i == 4:
            emotion = 9  # out of range for FER2013
        if bad_rows and i == 5:
            pixels = "300 " + pixels.split(" ", 1)[1]  # out of 0..255
        lines.append(f"{emotion},{pixels},{usage}")
        votes = np.zeros(10, int)
        if i % 5 == 0:
            votes[9] = 10  # not a face
        elif i % 5 == 1:
            votes[[0, 1]] = [5, 5]  # a tie: dropped by majority and plurality
        else:
            votes[i % 8] = 7
            votes[(i + 1) % 8] = 2
            votes[8] = 1  # a single vote: noise
        vote_lines.append(f"{usage},fer{i:07d}.png," + ",".join(map(str, votes)))
    text = "\n".join(lines) + "\n"
    if gz:
        with gzip.open(root / "fer2013.csv.gz", "wt", newline="") as fh:
            fh.write(text)
    else:
        (root / "fer2013.csv").write_text(text)
    (root / "fer2013new.csv").write_text("\n".join(vote_lines) + "\n")
    return root


def test_ferplus_modes_follow_the_reference_rule():
    votes = np.array([[0, 0, 0, 0, 0, 0, 0, 0, 0, 10],  # not a face
                      [6, 1, 1, 1, 1, 0, 0, 0, 0, 0],  # 6 of 6 after dropping single votes
                      [4, 3, 3, 0, 0, 0, 0, 0, 0, 0],  # 4 of 10: no majority
                      [5, 5, 0, 0, 0, 0, 0, 0, 0, 0],  # tie
                      [2, 0, 0, 0, 0, 0, 0, 0, 8, 0]], float)  # unknown wins
    keep, label, _ = ferplus_labels(votes, "majority")
    assert keep.tolist() == [False, True, False, False, False] and label[1] == 0
    keep, label, _ = ferplus_labels(votes, "plurality")
    assert keep.tolist() == [False, True, True, False, False]
    keep, label, soft = ferplus_labels(votes, "probability")
    assert keep.tolist() == [False, True, True, True, False]
    assert np.allclose(soft[2], [0.4, 0.3, 0.3, 0, 0, 0, 0, 0]) and np.allclose(soft[keep].sum(1), 1)


@pytest.mark.parametrize("gz", [True, False])
def test_fer_readers_count_skip_and_align_by_row(tmp_path, gz):
    root = write_fer(tmp_path / "fer", gz=gz)
    plus = FERPlus.read(root)
    assert {s: len(p["images"]) for s, p in plus["splits"].items()} == {"train": 28, "val": 10, "test": 10}
    assert plus["skipped"].total == 2 and plus["skipped"].examples  # the bad pixel rows, named
    train = plus["splits"]["train"]
    rows = train["rows"]  # the votes of row i stay with the pixels of row i
    assert all(train["labels"]["votes"][k].argmax() in (r % 8, 9, 0) for k, r in enumerate(rows))
    fer = FER2013.read(root)
    assert len(fer["splits"]["train"]["images"]) == 27  # and the out-of-range emotion 9
    assert "emotion label outside 0..6" in fer["skipped"].counts


def test_fer_bad_files_are_one_line_errors(tmp_path):
    root = write_fer(tmp_path / "ok")
    (tmp_path / "trunc").mkdir()
    data = (root / "fer2013.csv.gz").read_bytes()
    (tmp_path / "trunc" / "fer2013.csv.gz").write_bytes(data[: len(data) // 2])
    (tmp_path / "trunc" / "fer2013new.csv").write_text((root / "fer2013new.csv").read_text())
    with pytest.raises(DataError, match="truncated"):
        FERPlus.read(tmp_path / "trunc")
    (tmp_path / "cols").mkdir()
    (tmp_path / "cols" / "fer2013.csv").write_text("label,image,split\n1,2,3\n")
    with pytest.raises(DataError, match="header"):
        FER2013.read(tmp_path / "cols")
    (tmp_path / "short").mkdir()
    with gzip.open(tmp_path / "short" / "fer2013.csv.gz", "wb") as fh:
        fh.write(gzip.decompress(data))
    votes = (root / "fer2013new.csv").read_text().splitlines()
    (tmp_path / "short" / "fer2013new.csv").write_text("\n".join(votes[:20]) + "\n")
    with pytest.raises(DataError, match="truncated"):
        FERPlus.read(tmp_path / "short")
    with pytest.raises(DataError, match="no fer2013new.csv"):
        FERPlus.read(tmp_path / "cols")


def _jpeg(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


UTK_NAMES = ["25_0_0_20170116174525125.jpg.chip.jpg", "31_1_2_20170116174525126.jpg.chip.jpg",
             "39_1_20170116174525125.jpg.chip.jpg",  # race missing: kept, irregular
             "24_0_1_20170116220224657 .jpg.chip.jpg",  # stray space: kept, irregular
             "55_0_0_20170116232725357jpg.chip.jpg",  # missing dot: kept, irregular
             "abc_1_0_2017.jpg.chip.jpg",  # no age: skipped
             "40_7_0_20170116232725357.jpg.chip.jpg",  # gender 7: skipped
             "60_1_3_20170116232725999.jpg.chip.jpg"]  # corrupt image: skipped


def write_utk_zip(path: Path, names, faces, corrupt=()):
    with zipfile.ZipFile(path, "w") as z:
        for name, img in zip(names, faces.images):
            z.writestr(name, b"not a jpeg" if name in corrupt else _jpeg(img))


def test_utkface_provided_split_irregular_names_and_skips(tmp_path):
    faces = _faces(len(UTK_NAMES), 100)
    src = tmp_path / "utk"
    src.mkdir()
    write_utk_zip(src / "train.zip", UTK_NAMES, faces, corrupt={UTK_NAMES[-1]})
    write_utk_zip(src / "val.zip", UTK_NAMES[:2], faces)
    write_utk_zip(src / "test.zip", UTK_NAMES[1:2], faces)
    write_utk_zip(src / "original_200x200_sample.zip", UTK_NAMES[:1], faces)  # ignored: not a split
    reading = registry("datasets").get("utkface").obj.read(tmp_path)  # found one level down
    counts = {s: len(p["images"]) for s, p in reading["splits"].items()}
    assert counts == {"train": 5, "val": 2, "test": 1}
    assert reading["notes"]["irregular_names_kept"] == sorted(UTK_NAMES[2:5])
    skipped = reading["skipped"].counts
    assert skipped["name does not carry age and gender"] == 1 and skipped["image does not decode"] == 1
    assert skipped["gender not 0 (male) or 1 (female)"] == 1
    train = reading["splits"]["train"]
    assert train["labels"]["age"].tolist() == [25, 31, 39, 24, 55]
    assert train["labels"]["race"].tolist() == [0, 2, -1, 1, 0]


def test_utkface_own_split_is_seeded_stratified_and_keeps_duplicates_together(tmp_path):
    faces = _faces(60, 64)
    src = tmp_path / "flat"
    src.mkdir()
    names = []
    for i in range(60):
        name = f"{20 + i % 10}_{i % 2}_0_2017011617452{i:04d}.jpg.chip.jpg"  # two strata of 30
        names.append(name)
        (src / name).write_bytes(_jpeg(faces.images[i]))
    for j in range(4):  # byte-identical copies under other names
        (src / f"{90 + j}_0_0_20170101000000{j:03d}.jpg.chip.jpg").write_bytes((src / names[j]).read_bytes())
    cls = registry("datasets").get("utkface").obj
    a, b = cls.read(src, seed=3), cls.read(src, seed=3)
    assert [p["names"] for p in a["splits"].values()] == [p["names"] for p in b["splits"].values()]
    split_of = {n: s for s, p in a["splits"].items() for n in p["names"]}
    for j in range(4):
        assert split_of[f"{90 + j}_0_0_20170101000000{j:03d}.jpg.chip.jpg"] == split_of[names[j]]
    sizes = {s: len(p["names"]) for s, p in a["splits"].items()}
    assert sizes["train"] > sizes["val"] > 0 and sizes["test"] > 0
    assert cls.read(src, seed=4)["splits"]["val"]["names"] != a["splits"]["val"]["names"]


def test_utkface_source_of_another_data_set_is_refused(tmp_path):
    write_fer(tmp_path / "fer")
    with pytest.raises(DataError, match="UTKFace"):
        registry("datasets").get("utkface").obj.read(tmp_path / "fer")


def test_prepare_writes_atomically_is_idempotent_and_runs(tmp_path, cli, monkeypatch):
    root = write_fer(tmp_path / "src")
    out = tmp_path / "prepared"
    manifest = prepare("ferplus", root, out, landmarks="template")
    assert manifest["counts"] == {"train": 28, "val": 10, "test": 10}
    assert manifest["landmarks"]["per_split"]["train"]["template"] == 28
    assert manifest["skipped_total"] == 2 and len(manifest["checksums"]) >= 9
    images = np.load(out / "train.images.npy", mmap_mode="r")
    assert images.shape == (28, 48, 48, 1) and images.dtype == np.uint8
    stamp = (out / "manifest.json").stat().st_mtime_ns
    assert prepare("ferplus", root, out, landmarks="template") == manifest  # nothing to do
    assert (out / "manifest.json").stat().st_mtime_ns == stamp
    with pytest.raises(UsageError, match="overwrite"):
        prepare("ferplus", root, out, landmarks="template", limit=5)
    # an interrupted preparation leaves nothing behind
    def boom(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr("occlusion_distill.data.prepare.add_landmarks", boom)
    with pytest.raises(KeyboardInterrupt):
        prepare("fer2013", root, tmp_path / "never", landmarks="mtcnn")
    assert not (tmp_path / "never").exists() and not list(tmp_path.glob(".never*"))
    # modes choose faces at load time from the same prepared data
    ds = registry("datasets").create("ferplus", data=str(out))
    assert ds.size("train") == int(ferplus_labels(np.load(out / "train.votes.npy"), "majority")[0].sum())
    soft = registry("datasets").create("ferplus", data=str(out), mode="probability")
    faces = soft.load("train", image_size=40, channels=3)
    assert faces.images.shape[1:] == (40, 40, 3) and faces.labels["expression_probs"].shape[1] == 8
    res = cli("data", "info", out, "--json")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["splits"]["train"]["stored"] == 28 and info["selection"] == {"mode": "majority"}


def test_run_reads_prepared_data_and_checks_labels(tmp_path, cli):
    root = write_fer(tmp_path / "src", bad_rows=False)
    out = tmp_path / "prepared"
    res = cli("data", "prepare", "fer2013", "--source", root, "--out", out, "--landmarks", "template", "--quiet")
    assert res.returncode == 0, res.stderr
    assert "train 30" in res.stdout
    run = tmp_path / "run"
    res = cli("run", "--dataset", "fer2013", "--data", out, "--preset", "smoke", "--epochs", "1",
              "--occlusion", "mask", "--quiet", "--out", run)
    assert res.returncode == 0, res.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["dataset"] == "fer2013"
    plus = tmp_path / "plus"
    prepare("ferplus", root, plus, landmarks="template")
    soft = tmp_path / "soft"  # FER+ vote distributions as soft targets, through the whole pipeline
    res = run_main("run", "--dataset", "ferplus", "--data", plus, "--dataset-arg", "mode=probability", "--preset", "smoke",
              "--epochs", "1", "--quiet", "--out", soft)
    assert res.returncode == 0, res.stderr
    assert 0 <= json.loads((soft / "metrics.json").read_text())["student"] <= 100
    # the command given to main(), not the process's own (pytest's) arguments
    assert json.loads((soft / "config.json").read_text())["command"].startswith("occdistill run --dataset ferplus")
    res = run_main("run", "--task", "age", "--dataset", "fer2013", "--data", out, "--preset", "smoke", "--out",
              tmp_path / "r2")
    assert res.returncode == 2 and "age" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = run_main("run", "--dataset", "utkface", "--data", out, "--preset", "smoke", "--out", tmp_path / "r3")
    assert res.returncode == 2 and "fer2013" in res.stderr
    res = run_main("run", "--dataset", "ferplus", "--preset", "smoke", "--out", tmp_path / "r4")
    assert res.returncode == 2 and "data prepare" in res.stderr


def test_folder_and_csv_user_data(tmp_path):
    faces = _faces(24, 80)
    root = tmp_path / "folder"
    for i in range(24):
        cls = ["happy", "sad", "neutral"][i % 3]
        (root / cls).mkdir(parents=True, exist_ok=True)
        (root / cls / f"{i}.png").write_bytes(cv2.imencode(".png", faces.images[i])[1].tobytes())
    (root / "sad" / "broken.jpg").write_bytes(b"nope")
    reading = registry("datasets").get("folder").obj.read(root, label="expression", size=64)
    assert reading["classes"] == {"expression": ["happy", "neutral", "sad"]}
    assert sum(len(p["images"]) for p in reading["splits"].values()) == 24
    assert reading["skipped"].counts["image does not decode"] == 1
    assert reading["splits"]["train"]["images"].shape[1:] == (64, 64, 3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        registry("datasets").get("folder").obj.read(tmp_path / "empty")

    rows = [{"path": f"folder/{['happy', 'sad', 'neutral'][i % 3]}/{i}.png", "age": str(20 + i),
             "gender": ["male", "female"][i % 2], "split": ["train", "train", "val", "test"][i % 4]}
            for i in range(24)]
    rows.append({"path": "folder/happy/0.png", "age": "200", "gender": "male", "split": "train"})
    with open(tmp_path / "faces.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "age", "gender", "split"])
        writer.writeheader()
        writer.writerows(rows)
    reading = registry("datasets").get("csv").obj.read(tmp_path / "faces.csv")
    assert {s: len(p["images"]) for s, p in reading["splits"].items()} == {"train": 12, "val": 6, "test": 6}
    assert reading["labels"] == ["gender", "age"] and reading["classes"]["gender"] == ["female", "male"]
    assert reading["skipped"].counts["age outside 0..120"] == 1
    (tmp_path / "nopath.csv").write_text("file,age\nx.png,3\n")
    with pytest.raises(DataError, match="'path' column"):
        registry("datasets").get("csv").obj.read(tmp_path / "nopath.csv")


def test_affectnet_official_layout(tmp_path):
    from occlusion_distill.data.affectnet import COLUMNS

    faces = _faces(40, 96)
    images = tmp_path / "Manually_Annotated_Images" / "1"
    images.mkdir(parents=True)
    header = ",".join(COLUMNS)
    train_rows, val_rows = [header], [header]
    for i in range(40):
        canvas = np.full((160, 200, 3), 90, np.uint8)
        canvas[30:126, 50:146] = faces.images[i]  # the face box: x 50, y 30, 96 x 96
        cv2.imwrite(str(images / f"{i}.jpg"), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
        pts = np.zeros((68, 2))
        lm = faces.landmarks[i] + [50, 30]
        pts[36:42], pts[42:48], pts[30], pts[48], pts[54] = lm[0], lm[1], lm[2], lm[3], lm[4]
        code = [0, 1, 2, 3, 4, 5, 6, 7, 8, 10][i % 10]
        row = f"1/{i}.jpg,50,30,96,96,{';'.join(f'{v:.2f}' for v in pts.ravel())},{code},0.1,-0.2"
        (train_rows if i < 30 else val_rows).append(row)
    val_rows.append("1/missing.jpg,0,0,50,50," + ";".join(["1"] * 136) + ",1,0,0")
    (tmp_path / "training.csv").write_text("\n".join(train_rows) + "\n")
    (tmp_path / "validation.csv").write_text("\n".join(val_rows) + "\n")
    reading = registry("datasets").get("affectnet").obj.read(tmp_path, size=48)
    counts = {s: len(p["images"]) for s, p in reading["splits"].items()}
    assert counts["train"] + counts["val"] == 24 and counts["val"] >= 1 and counts["test"] == 8
    skipped = reading["skipped"].counts
    assert skipped["expression 8 (none)"] == 4 and skipped["expression 10 (non-face)"] == 4
    assert skipped["image file not found"] == 1
    test = reading["splits"]["test"]
    # the given landmarks follow the crop: the face filled the box, so they land where synthfaces put them
    k = 0
    expected = faces.landmarks[30] * 48 / 96
    assert np.allclose(test["landmarks"][k], expected, atol=0.6)
    out = prepare("affectnet", tmp_path, tmp_path / "prepared", read_args={"size": 48})
    assert out["landmarks"]["method"] == "given" and out["counts"]["test"] == 8


def test_data_prepare_bad_input_is_one_line_and_writes_nothing(tmp_path):
    fer = write_fer(tmp_path / "fer")
    res = run_main("data", "prepare", "utkface", "--source", fer, "--out", tmp_path / "utk", "--quiet")
    assert res.returncode == 3 and "UTKFace" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "utk").exists()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    res = run_main("data", "prepare", "fer2013", "--source", fer, "--out", tmp_path / "busy", "--quiet")
    assert res.returncode == 2 and "not prepared data" in res.stderr
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
    res = run_main("data", "prepare", "synthfaces", "--source", fer, "--out", tmp_path / "s", "--quiet")
    assert res.returncode == 2 and "nothing to prepare" in res.stderr
    res = run_main("data", "info", tmp_path / "busy")
    assert res.returncode == 3 and "data prepare" in res.stderr


def test_bench_data_reports_input_and_training_rates(tmp_path, cli):
    out = tmp_path / "data.json"
    res = cli("bench", "data", "--dataset-arg", "n_train=96", "--batch-size", "16", "--batches", "4", "--quiet",
              "--json", out)
    assert res.returncode == 0, res.stderr
    r = json.loads(out.read_text())
    assert r["batches"] == 4 and r["input_samples_per_s"] > 0 and r["train_samples_per_s"] > 0
    assert r["input_over_train"] == pytest.approx(r["input_samples_per_s"] / r["train_samples_per_s"], rel=0.01)
    assert "input / training" in res.stdout


def test_prepare_guards_sources_and_splits(tmp_path):
    root = write_fer(tmp_path / "src", gz=False)
    with pytest.raises(UsageError, match="holds it"):
        prepare("fer2013", root, root, landmarks="template", overwrite=True)
    with pytest.raises(UsageError, match="holds it"):
        prepare("fer2013", root, tmp_path, landmarks="template", overwrite=True)
    assert (root / "fer2013.csv").is_file()  # nothing of the source was touched
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match="not prepared data"):
        prepare("fer2013", root, other, landmarks="template", overwrite=True)
    assert (other / "keep.txt").read_text() == "mine"
    # the same --out prepared from another copy of the files is not "already done"
    out = tmp_path / "out"
    prepare("fer2013", root, out, landmarks="template")
    copy = write_fer(tmp_path / "copy", gz=True)
    with pytest.raises(UsageError, match="other files"):
        prepare("fer2013", copy, out, landmarks="template")
    # a BOM before the header is fine; a CSV that lost rows no longer lines up with the FER+ votes
    text = (root / "fer2013.csv").read_text()
    (root / "fer2013.csv").write_text("\ufeff" + text)
    assert len(FER2013.read(root)["splits"]["test"]["images"]) == 10
    (root / "fer2013.csv").write_text("\n".join(text.splitlines()[:-1]) + "\n")
    with pytest.raises(DataError, match="rows"):
        FERPlus.read(root)
    # a split with no faces stops the preparation, naming it
    (root / "fer2013.csv").write_text("\n".join(text.splitlines()[:31]) + "\n")
    with pytest.raises(DataError, match="val, test splits"):
        prepare("fer2013", root, tmp_path / "empty", landmarks="template")
    assert not (tmp_path / "empty").exists()


def test_utkface_partial_split_and_zipped_fer(tmp_path):
    faces = _faces(len(UTK_NAMES), 100)
    (tmp_path / "utk").mkdir()
    write_utk_zip(tmp_path / "utk" / "train.zip", UTK_NAMES, faces)
    with pytest.raises(DataError, match="no val or test"):
        registry("datasets").get("utkface").obj.read(tmp_path / "utk")
    src = write_fer(tmp_path / "fer")
    with zipfile.ZipFile(tmp_path / "fer.zip", "w") as z:  # the official files inside a zip
        z.write(src / "fer2013.csv.gz", "FER/fer2013.csv.gz")
        z.write(src / "fer2013new.csv", "FER/fer2013new.csv")
    manifest = prepare("ferplus", tmp_path / "fer.zip", tmp_path / "zipped", landmarks="template")
    assert manifest["counts"]["test"] == 10
    assert {Path(f["path"]).name for f in manifest["source"]["files"]} == {"fer.zip"}
