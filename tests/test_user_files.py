"""Files as users really hand them to `data prepare`: archive and OS leftovers, ragged CSV rows, CSVs
from spreadsheets in other locales, data sets with their own landmarks, and sources too small to split.

Each case is prepared through the command, as a user runs it, and checked against the right value:
the classes, every stored label by file name, the reasons rows were skipped, or one error line with
exit 3 and nothing left behind."""

import json
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from occlusion_distill.cli import main
from occlusion_distill.data.sources import is_leftover, search
from occlusion_distill.data.synthfaces import generate
from occlusion_distill.data.utkface import UTKFace
from occlusion_distill.errors import DataError

FACES = generate(24, 64, seed=3).images
APPLEDOUBLE = (b"\x00\x05\x16\x07\x00\x02\x00\x00" + b"Mac OS X").ljust(4096, b"\x00")


def jpeg(i: int) -> bytes:
    return cv2.imencode(".jpg", cv2.cvtColor(FACES[i % len(FACES)], cv2.COLOR_RGB2BGR))[1].tobytes()


def prepare(capsys, *args) -> tuple[int, str, str]:
    """`occdistill data prepare ARGS --quiet` in this process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as done:
        main(["data", "prepare", *map(str, args), "--quiet"])
    out, err = capsys.readouterr()
    return done.value.code, out, err


def stored(out: Path, label: str) -> dict[str, int | float]:
    """File name -> stored label, over all splits of a prepared directory."""
    result = {}
    for split in ("train", "val", "test"):
        names = (out / f"{split}.names.txt").read_text().split("\n")[:-1]
        values = np.load(out / f"{split}.{label}.npy").tolist()
        result.update({Path(n).name: v for n, v in zip(names, values)})
    return result


def assert_one_line_error(code: int, err: str, out: Path, *fragments: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 3 and len(lines) == 1 and lines[0].startswith("occdistill: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert not out.exists() and not list(out.parent.glob(f".{out.name}.tmp-*")), "left a half-written output"
    return lines[0]


def class_folders(root: Path, per_class: int = 6) -> Path:
    for c, name in enumerate(("happy", "sad")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (root / name / f"{i}.jpg").write_bytes(jpeg(c * per_class + i))
    return root


# --- 1. archive and OS leftovers are never a class, never an image, never blamed on the images --------

def macosx(root):  # the issue's case: an empty __MACOSX/happy/ and an AppleDouble sidecar
    (root / "__MACOSX" / "happy").mkdir(parents=True)
    (root / "happy" / "._0.jpg").write_bytes(APPLEDOUBLE)
    return 1


def macosx_full(root):  # what unzip really gives: sidecars inside __MACOSX too
    (root / "__MACOSX" / "sad").mkdir(parents=True)
    (root / "__MACOSX" / "sad" / "._0.jpg").write_bytes(APPLEDOUBLE)
    (root / "__MACOSX" / "._sad").write_bytes(APPLEDOUBLE)
    return 0  # a whole leftover folder is skipped, not counted file by file


def finder_and_explorer(root):
    for d in (root, root / "happy", root / "sad"):
        (d / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(100))
    (root / "sad" / "Thumbs.db").write_bytes(bytes(512))
    (root / "happy" / "desktop.ini").write_text("[.ShellClassInfo]\n")
    return 0  # not image files: never read at all


def synology_and_jupyter(root):
    (root / "@eaDir" / "0.jpg").mkdir(parents=True)
    (root / "@eaDir" / "0.jpg" / "SYNOFILE_THUMB_M.jpg").write_bytes(jpeg(0))
    (root / "happy" / "@eaDir" / "1.jpg").mkdir(parents=True)
    (root / "happy" / "@eaDir" / "1.jpg" / "SYNOFILE_THUMB_S.jpg").write_bytes(jpeg(1))
    (root / ".ipynb_checkpoints").mkdir()
    (root / "sad" / ".ipynb_checkpoints").mkdir()
    (root / "sad" / ".ipynb_checkpoints" / "2-checkpoint.jpg").write_bytes(jpeg(2))
    return 2  # two thumbnails and a checkpoint copy that are real JPEGs: not faces of the set


def hidden_files(root):
    (root / "happy" / ".hidden.jpg").write_bytes(jpeg(3))
    (root / ".Trash-1000").mkdir()
    return 1


@pytest.mark.parametrize("leftovers", [macosx, macosx_full, finder_and_explorer, synology_and_jupyter,
                                       hidden_files])
def test_archive_and_os_leftovers_are_never_classes_or_broken_images(tmp_path, capsys, leftovers):
    src = class_folders(tmp_path / "src")
    counted = leftovers(src)
    code, out, err = prepare(capsys, "folder", "--source", src, "--out", tmp_path / "out", "--landmarks", "template")
    assert code in (0, None), err
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["classes"] == {"expression": ["happy", "sad"]}
    assert manifest["skipped_total"] == 0 and "decode" not in out and "broken" not in out
    assert sum(manifest["counts"].values()) == 12
    assert manifest["ignored_total"] == counted
    if counted:
        assert f"ignored (not faces) {counted}: system or archive file" in out
        with pytest.raises(SystemExit):
            main(["data", "info", str(tmp_path / "out")])
        info = capsys.readouterr().out
        assert f"ignored (not faces): system or archive file (not a face image) ({counted})" in info
    assert stored(tmp_path / "out", "expression") == {f"{i}.jpg": c for c in (0, 1) for i in range(6)}


def test_leftovers_in_provided_splits_and_in_zips(tmp_path):
    src = tmp_path / "src"
    for split in ("train", "val", "test"):
        class_folders(src / split, per_class=2)
        (src / split / "__MACOSX").mkdir()
        (src / split / "happy" / "._1.jpg").write_bytes(APPLEDOUBLE)
    from occlusion_distill.registry import registry

    reading = registry("datasets").get("folder").obj.read(src, size=64)
    assert reading["classes"] == {"expression": ["happy", "sad"]}
    assert reading["skipped"].total == 0 and reading["ignored"].total == 3
    # a UTKFace zip made on a Mac: its __MACOSX/._ sidecars are not faces with unreadable names
    name = "25_0_0_20170116174525125.jpg.chip.jpg"
    with zipfile.ZipFile(tmp_path / "utk.zip", "w") as z:
        for k in range(12):
            z.writestr(f"UTKFace/{20 + k}_{k % 2}_0_2017011617452{k:04d}.jpg.chip.jpg", jpeg(k))
        z.writestr(f"__MACOSX/UTKFace/._{name}", APPLEDOUBLE)
        z.writestr("UTKFace/.DS_Store", bytes(64))
    utk = UTKFace.read(tmp_path / "utk.zip")
    assert utk["skipped"].total == 0 and sum(len(p["images"]) for p in utk["splits"].values()) == 12


def test_what_counts_as_a_leftover():
    for path in ("__MACOSX/happy", "happy/._0.jpg", ".DS_Store", "Thumbs.db", "THUMBS.DB", "desktop.ini",
                 "@eaDir/x.jpg/SYNOFILE_THUMB_M.jpg", "a/.ipynb_checkpoints/b.jpg", ".hidden.png",
                 "happy\\._1.jpg"):
        assert is_leftover(path), path
    for path in ("happy/0.jpg", "_neutral/1.png", "eaDir/1.jpg", "MACOSX/2.jpg", "a.b/c.jpg", "../x/0.jpg"):
        assert not is_leftover(path), path


def test_a_source_inside_a_hidden_folder_is_still_read(tmp_path, capsys):
    """Leftovers are judged below --source: a data set kept under ~/.data is the user's choice."""
    src = class_folders(tmp_path / ".data" / "faces")
    assert search(src, lambda p: p.suffix == ".jpg", "faces")  # the search too
    code, _, err = prepare(capsys, "folder", "--source", src, "--out", tmp_path / "out", "--landmarks", "template")
    assert code in (0, None), err


# --- 2. no row shape crashes the CSV reader or shifts a label ------------------------------------------

def images_for_csv(root: Path, n: int) -> None:
    (root / "img").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / "img" / f"{i}.jpg").write_bytes(jpeg(i))


def test_the_issue_short_row_is_skipped_and_counted(tmp_path, capsys):
    images_for_csv(tmp_path, 12)
    rows = ["path,expression,gender", "img/0.jpg,happy,0", "img/1.jpg,happy"]
    rows += [f"img/{i}.jpg,{['happy', 'sad'][i % 2]},{i % 2}" for i in range(2, 12)]
    (tmp_path / "faces.csv").write_text("\n".join(rows) + "\n")
    code, out, err = prepare(capsys, "csv", "--source", tmp_path / "faces.csv", "--out", tmp_path / "out",
                             "--landmarks", "template")
    assert code in (0, None), err
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["skipped"] == {"fewer cells than the header has columns": {"count": 1, "examples": ["line 3"]}}
    assert "skipped 1: fewer cells than the header has columns (1)" in out
    assert stored(tmp_path / "out", "expression") == {"0.jpg": 0, **{f"{i}.jpg": i % 2 for i in range(2, 12)}}
    assert stored(tmp_path / "out", "gender") == {"0.jpg": 0, **{f"{i}.jpg": i % 2 for i in range(2, 12)}}


def test_every_row_shape_is_read_right_or_counted_under_its_reason(tmp_path, capsys):
    images_for_csv(tmp_path, 17)
    (tmp_path / "img" / "a,b.jpg").write_bytes(jpeg(20))
    text = "\r\n".join([
        " Path , Expression ,age",            # header names with spaces and capitals
        "img/0.jpg,happy,30",
        "img/1.jpg,happy",                     # short
        "img/2.jpg,sad,40,extra",              # long, with something in the extra cell
        "img/3.jpg,sad,41,,",                  # long only by empty trailing cells (spreadsheets): kept
        "",                                    # blank line
        " , , ",                               # whitespace cells only
        "img/4.jpg,,25",                       # empty label
        "img/5.jpg,   ,25",                    # whitespace label
        "  img/6.jpg  ,  sad  , 26 ",          # whitespace around every value: kept
        '"img/a,b.jpg","happy","27"',          # quoted fields, a comma in the path: kept
        ',happy,30',                           # no path
        "img/7.jpg,happy,",                    # no age
        "img/8.jpg,happy,thirty",              # age not a number
        "img/9.jpg,happy,130",                 # age out of range
        "img/10.jpg,happy,nan",                # what pandas writes for a missing age
        "img/missing.jpg,sad,30",              # the image is not there
    ] + [f"img/{i}.jpg,{['happy', 'sad'][i % 2]},{20 + i}" for i in range(11, 14)]) + "\r\n"
    (tmp_path / "faces.csv").write_text(text, newline="")
    from occlusion_distill.registry import registry

    with pytest.raises(DataError, match=r"7 usable faces \(skipped: .*\), too few to split"):
        registry("datasets").get("csv").obj.read(tmp_path / "faces.csv", size=64)
    more = [f"img/{i}.jpg,{['happy', 'sad'][i % 2]},{20 + i}" for i in (4, 14, 15, 16)]
    (tmp_path / "faces.csv").write_text(text + "\r\n".join(more) + "\r\n", newline="")
    code, out, err = prepare(capsys, "csv", "--source", tmp_path / "faces.csv", "--out", tmp_path / "out",
                             "--landmarks", "template")
    assert code in (0, None), err
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert {r: v["count"] for r, v in manifest["skipped"].items()} == {
        "fewer cells than the header has columns": 1,
        "more cells than the header has columns (a ',' inside an unquoted cell?)": 1,
        "blank row": 2, "expression missing": 2, "path missing": 1, "age missing": 2, "age not a number": 1,
        "age outside 0..120": 1, "image file not found or unreadable": 1}
    assert manifest["skipped"]["fewer cells than the header has columns"]["examples"] == ["line 3"]
    assert manifest["classes"] == {"expression": ["happy", "sad"]}
    expression, age = stored(tmp_path / "out", "expression"), stored(tmp_path / "out", "age")
    want = {"0.jpg": (0, 30), "3.jpg": (1, 41), "6.jpg": (1, 26), "a,b.jpg": (0, 27),
            **{f"{i}.jpg": (i % 2, 20 + i) for i in (4, 11, 12, 13, 14, 15, 16)}}
    assert {k: (expression[k], age[k]) for k in expression} == want


def test_class_numbers_as_spreadsheets_write_them(tmp_path):
    images_for_csv(tmp_path, 12)
    rows = ["path;expression"] + [f"img/{i}.jpg;{i % 3}{',0' if i % 2 else ''}" for i in range(11)]
    rows.append("img/11.jpg;-1")
    (tmp_path / "faces.csv").write_text("\n".join(rows) + "\n")
    from occlusion_distill.registry import registry

    reading = registry("datasets").get("csv").obj.read(tmp_path / "faces.csv", size=64)
    assert reading["classes"] == {"expression": ["0", "1", "2"]}  # '1,0' is class 1, not a class of its own
    assert dict(reading["skipped"].counts) == {"expression out of range": 1}
    got = {Path(n).name: int(v) for part in reading["splits"].values()
           for n, v in zip(part["names"], part["labels"]["expression"])}
    assert got == {f"{i}.jpg": i % 3 for i in range(11)}


# --- 3. CSVs saved by spreadsheets in other locales -----------------------------------------------------

LOCALE_ROWS = [("img/0.jpg", "happy", "23,5"), ("img/1.jpg", "sad", "40")] + \
              [(f"img/{i}.jpg", ["happy", "sad"][i % 2], str(20 + i)) for i in range(2, 12)]


def write_locale(path: Path, delimiter: str, encoding: str, newline: str, bom: bool = False,
                 path_of=lambda p: p) -> None:
    lines = [delimiter.join(("path", "expression", "age"))]
    lines += [delimiter.join((path_of(p), e, a)) for p, e, a in LOCALE_ROWS]
    data = (newline.join(lines) + newline).encode(encoding)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)


@pytest.mark.parametrize("delimiter, encoding, newline, bom", [
    (";", "utf-8", "\r\n", True),   # Excel "CSV UTF-8" in a German or French locale
    (";", "cp1252", "\r\n", False),  # Excel "CSV" in the same locales
    ("\t", "utf-16", "\r\n", False),  # Excel "Unicode text" (its BOM comes with the codec)
    ("|", "utf-8", "\n", False),
])
def test_locale_csvs_are_read_with_their_delimiter_and_decimal_comma(tmp_path, capsys, delimiter, encoding,
                                                                     newline, bom):
    images_for_csv(tmp_path, 12)
    (tmp_path / "img" / "café.jpg").write_bytes(jpeg(0))
    (tmp_path / "img" / "0.jpg").unlink()
    path_of = lambda p: p.replace("img/0.jpg", "img/café.jpg")  # noqa: E731
    write_locale(tmp_path / "faces.csv", delimiter, encoding, newline, bom, path_of)
    code, out, err = prepare(capsys, "csv", "--source", tmp_path / "faces.csv", "--out", tmp_path / "out",
                             "--landmarks", "template")
    assert code in (0, None), err
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["skipped_total"] == 0
    assert stored(tmp_path / "out", "age") == {Path(path_of(p)).name: pytest.approx(float(a.replace(",", ".")))
                                               for p, _, a in LOCALE_ROWS}
    assert stored(tmp_path / "out", "expression") == {Path(path_of(p)).name: ["happy", "sad"].index(e)
                                                      for p, e, _ in LOCALE_ROWS}
    name = {"\t": "tab"}.get(delimiter, repr(delimiter))
    assert f"{name} between columns" in manifest["notes"]["read"] and f"read: {manifest['notes']['read']}" in out


def test_a_decimal_comma_in_a_comma_separated_file_must_be_quoted(tmp_path):
    images_for_csv(tmp_path, 12)
    rows = ["path,age", 'img/0.jpg,"23,5"', "img/1.jpg,23,5"] + [f"img/{i}.jpg,{20 + i}" for i in range(2, 12)]
    (tmp_path / "faces.csv").write_text("\n".join(rows) + "\n")
    from occlusion_distill.registry import registry

    reading = registry("datasets").get("csv").obj.read(tmp_path / "faces.csv", size=64)
    ages = {Path(n).name: float(v) for part in reading["splits"].values()
            for n, v in zip(part["names"], part["labels"]["age"])}
    assert ages["0.jpg"] == 23.5 and "1.jpg" not in ages  # 23 and 5 in two cells: a long row, not age 23
    assert list(reading["skipped"].counts) == ["more cells than the header has columns (a ',' inside an unquoted cell?)"]


@pytest.mark.parametrize("header, fragment", [
    ("file;label", "has file;label"),                          # no path under any delimiter
    ("file,label", "has file, label"),
    ("chemin;expression", "has chemin;expression"),
])
def test_a_header_without_path_names_what_was_seen(tmp_path, capsys, header, fragment):
    (tmp_path / "faces.csv").write_text(f"{header}\nimg/0.jpg;happy\n")
    code, _, err = prepare(capsys, "csv", "--source", tmp_path / "faces.csv", "--out", tmp_path / "out")
    line = assert_one_line_error(code, err, tmp_path / "out", "needs a 'path' column", fragment)
    assert "';', tab and '|'" in line


def test_undecodable_text_is_one_line(tmp_path, capsys):
    (tmp_path / "faces.csv").write_bytes(b"path,expression\nimg/\x81\x8d\x8f.jpg,happy\n")
    code, _, err = prepare(capsys, "csv", "--source", tmp_path / "faces.csv", "--out", tmp_path / "out")
    assert_one_line_error(code, err, tmp_path / "out", "not UTF-8", "CSV UTF-8")


# --- 4. every line of the summary agrees with the manifest ---------------------------------------------

def summary_agrees(out_text: str, manifest: dict) -> str:
    line = next(line for line in out_text.splitlines() if line.startswith("landmarks:"))
    per = {s: sum(p[s] for p in manifest["landmarks"]["per_split"].values()) for s in ("mtcnn", "template", "given")}
    method = manifest["landmarks"]["method"]
    total = sum(manifest["counts"].values())
    assert per[method] + (per["template"] if method == "mtcnn" else 0) == total
    if method == "given":
        assert f"the data set's own annotation for all {total:,} faces" in line and "template" not in line
    elif method == "template":
        assert f"template for all {total:,} faces" in line and "MTCNN" not in line
    else:
        rate = 100 * manifest["landmarks"]["detection_rate"]
        assert f"MTCNN found {rate:.1f}% of faces ({per['mtcnn']:,})" in line
        assert f"the other {per['template']:,}" in line
    counts = ", ".join(f"{s} {n:,}" for s, n in manifest["counts"].items())
    assert f"{counts} faces stored" in out_text
    if manifest["skipped_total"]:
        assert f"skipped {manifest['skipped_total']:,}:" in out_text
    else:
        assert "skipped" not in out_text
    return line


def write_affectnet(root: Path, n: int = 30) -> None:
    from occlusion_distill.data.affectnet import COLUMNS

    faces = generate(n, 96, seed=5)
    (root / "Manually_Annotated_Images" / "1").mkdir(parents=True)
    train, val = [",".join(COLUMNS)], [",".join(COLUMNS)]
    for i in range(n):
        canvas = np.full((160, 200, 3), 90, np.uint8)
        canvas[30:126, 50:146] = faces.images[i]
        cv2.imwrite(str(root / "Manually_Annotated_Images" / "1" / f"{i}.jpg"), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
        pts = np.zeros((68, 2))
        lm = faces.landmarks[i] + [50, 30]
        pts[36:42], pts[42:48], pts[30], pts[48], pts[54] = lm[0], lm[1], lm[2], lm[3], lm[4]
        (train if i < 22 else val).append(f"1/{i}.jpg,50,30,96,96,{';'.join(f'{v:.2f}' for v in pts.ravel())},"
                                          f"{i % 8},0.1,-0.2")
    (root / "training.csv").write_text("\n".join(train) + "\n")
    (root / "validation.csv").write_text("\n".join(val) + "\n")


def test_affectnet_with_its_own_landmarks_says_so(tmp_path, capsys):
    write_affectnet(tmp_path / "affectnet")
    code, out, err = prepare(capsys, "affectnet", "--source", tmp_path / "affectnet", "--out", tmp_path / "out",
                             "--arg", "size=64")
    assert code in (0, None), err
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["landmarks"]["method"] == "given"
    summary_agrees(out, manifest)


@pytest.mark.parametrize("method", ["template", "mtcnn"])
def test_summary_agrees_with_the_manifest(tmp_path, capsys, method):
    src = class_folders(tmp_path / "src")
    (src / "sad" / "broken.jpg").write_bytes(b"not a jpeg")
    code, out, err = prepare(capsys, "folder", "--source", src, "--out", tmp_path / "out", "--landmarks", method,
                             "--arg", "size=64")
    assert code in (0, None), err
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["landmarks"]["method"] == method and manifest["skipped_total"] == 1
    summary_agrees(out, manifest)


# --- 5. too few faces to split: the error names the real cause and what to do -------------------------

@pytest.mark.parametrize("per_class", [4, 1])
def test_a_tiny_folder_says_it_is_too_small_to_split(tmp_path, capsys, per_class):
    src = class_folders(tmp_path / "src", per_class=per_class)
    code, _, err = prepare(capsys, "folder", "--source", src, "--out", tmp_path / "out", "--landmarks", "template")
    n = 2 * per_class
    line = assert_one_line_error(code, err, tmp_path / "out", f"{n} usable faces, too few to split",
                                 "from 10 faces on", "train/val/test folders")
    assert "no faces found" not in line and "skipped" not in line


def test_ten_faces_are_enough_to_split(tmp_path, capsys):
    src = class_folders(tmp_path / "src", per_class=5)
    code, out, err = prepare(capsys, "folder", "--source", src, "--out", tmp_path / "out", "--landmarks", "template")
    assert code in (0, None), err
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["counts"] == {"train": 8, "val": 1, "test": 1}


def test_an_empty_provided_split_is_named(tmp_path, capsys):
    src = tmp_path / "src"
    for split in ("train", "test"):
        class_folders(src / split, per_class=2)
    (src / "val" / "happy").mkdir(parents=True)
    (src / "val" / "happy" / "0.jpg").write_bytes(b"broken")
    code, _, err = prepare(capsys, "folder", "--source", src, "--out", tmp_path / "out", "--landmarks", "template")
    assert_one_line_error(code, err, tmp_path / "out", "the val split has no usable faces", "8 in the others",
                          "image does not decode (1)")
    images_for_csv(tmp_path, 12)
    rows = ["path,expression,split"] + [f"img/{i}.jpg,happy,{'train' if i < 8 else 'Validation'}" for i in range(12)]
    (tmp_path / "faces.csv").write_text("\n".join(rows) + "\n")
    code, _, err = prepare(capsys, "csv", "--source", tmp_path / "faces.csv", "--out", tmp_path / "out2")
    assert_one_line_error(code, err, tmp_path / "out2", "the test split has no usable faces")


def test_windows_paths_in_a_csv(tmp_path):
    images_for_csv(tmp_path, 12)
    rows = ["path,expression"] + [f"img\\{i}.jpg,{['happy', 'sad'][i % 2]}" for i in range(12)]
    (tmp_path / "faces.csv").write_text("\r\n".join(rows) + "\r\n")
    from occlusion_distill.registry import registry

    reading = registry("datasets").get("csv").obj.read(tmp_path / "faces.csv", size=64)
    assert reading["skipped"].total == 0
    assert sorted(Path(n).name for part in reading["splits"].values() for n in part["names"]) == \
        sorted(f"{i}.jpg" for i in range(12))


# --- what a second reader found: more of each kind ------------------------------------------------------

def test_empty_and_unnamable_image_files_are_skipped_not_crashes(tmp_path, capsys):
    src = class_folders(tmp_path / "src")
    (src / "sad" / "empty.jpg").write_bytes(b"")  # a failed download
    code, _, err = prepare(capsys, "folder", "--source", src, "--out", tmp_path / "out", "--landmarks", "template")
    assert code in (0, None), err
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert {r: v["count"] for r, v in manifest["skipped"].items()} == {"image does not decode": 1}
    images_for_csv(tmp_path, 12)
    (tmp_path / "img" / "empty.jpg").write_bytes(b"")
    rows = ["path,expression", "img/empty.jpg,happy", "img/\x00.jpg,sad"] + \
        [f"img/{i}.jpg,{['happy', 'sad'][i % 2]}" for i in range(12)]
    (tmp_path / "faces.csv").write_text("\n".join(rows) + "\n")
    code, _, err = prepare(capsys, "csv", "--source", tmp_path / "faces.csv", "--out", tmp_path / "out2",
                           "--landmarks", "template")
    assert code in (0, None), err
    manifest = json.loads((tmp_path / "out2" / "manifest.json").read_text())
    assert {r: v["count"] for r, v in manifest["skipped"].items()} == {"image does not decode": 1,
                                                                        "path holds a NUL character": 1}
    write_affectnet(tmp_path / "affectnet")
    (tmp_path / "affectnet" / "Manually_Annotated_Images" / "1" / "3.jpg").write_bytes(b"")
    code, _, err = prepare(capsys, "affectnet", "--source", tmp_path / "affectnet", "--out", tmp_path / "out3",
                           "--arg", "size=64")
    assert code in (0, None), err
    assert json.loads((tmp_path / "out3" / "manifest.json").read_text())["skipped"]["image does not decode"]["count"] == 1


def test_an_unclosed_quote_is_one_line_not_a_swallowed_file(tmp_path, capsys):
    images_for_csv(tmp_path, 30)
    labels = ['"happy' if i == 15 else ["happy", "sad"][i % 2] for i in range(30)]
    rows = ["path,expression"] + [f"img/{i}.jpg,{label}" for i, label in enumerate(labels)]
    (tmp_path / "faces.csv").write_text("\n".join(rows) + "\n")
    code, _, err = prepare(capsys, "csv", "--source", tmp_path / "faces.csv", "--out", tmp_path / "out")
    assert_one_line_error(code, err, tmp_path / "out", "unclosed quote")


@pytest.mark.parametrize("values, fragment", [
    (["0", "1", "NA"], None),                    # NA is a missing label, not class 2
    (["0", "1", "10", "x"], "mixes class numbers (0, 1, 10) and names (x)"),
])
def test_a_label_that_is_not_a_class_number_never_renumbers_the_classes(tmp_path, capsys, values, fragment):
    images_for_csv(tmp_path, 24)
    rows = ["path,gender"] + [f"img/{i}.jpg,{values[i % len(values)]}" for i in range(24)]
    (tmp_path / "faces.csv").write_text("\n".join(rows) + "\n")
    code, _, err = prepare(capsys, "csv", "--source", tmp_path / "faces.csv", "--out", tmp_path / "out",
                           "--landmarks", "template")
    if fragment:
        assert_one_line_error(code, err, tmp_path / "out", fragment)
        return
    assert code in (0, None), err
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["classes"] == {"gender": ["0", "1"]} and manifest["skipped"]["gender missing"]["count"] == 8
    assert stored(tmp_path / "out", "gender") == {f"{i}.jpg": i % 3 for i in range(24) if i % 3 < 2}


def test_rows_left_out_add_no_class(tmp_path):
    images_for_csv(tmp_path, 12)
    rows = ["path,expression,age", "path,expression,age", "img/missing.jpg,angry,30", "img/0.jpg,neutral,500"] + \
        [f"img/{i}.jpg,{['happy', 'sad'][i % 2]},{20 + i}" for i in range(12)]
    (tmp_path / "faces.csv").write_text("\n".join(rows) + "\n")
    from occlusion_distill.registry import registry

    reading = registry("datasets").get("csv").obj.read(tmp_path / "faces.csv", size=64)
    assert dict(reading["skipped"].counts) == {"the header repeated": 1, "age outside 0..120": 1,
                                               "image file not found or unreadable": 1}
    # 'angry' (its image is missing) still names a class: the file is checked after the rows are read,
    # but the repeated header and the age-500 row add none
    assert reading["classes"] == {"expression": ["angry", "happy", "sad"]}


def test_split_folders_in_any_case_and_common_names(tmp_path, capsys):
    src = tmp_path / "src"
    for split in ("Train", "valid", "TEST"):
        class_folders(src / split, per_class=2)
    code, _, err = prepare(capsys, "folder", "--source", src, "--out", tmp_path / "out", "--landmarks", "template")
    assert code in (0, None), err
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["classes"] == {"expression": ["happy", "sad"]}
    assert manifest["counts"] == {"train": 4, "val": 4, "test": 4} and manifest["notes"]["split"] == "provided"
    class_folders(src / "extra", per_class=1)
    code, _, err = prepare(capsys, "folder", "--source", src, "--out", tmp_path / "out2", "--landmarks", "template")
    assert_one_line_error(code, err, tmp_path / "out2", "mixes split folders", "extra")


def test_one_class_folder_is_refused(tmp_path, capsys):
    """What unzipping a Mac-made archive of faces/happy, faces/sad gives: faces/ and __MACOSX/ side by side."""
    class_folders(tmp_path / "src" / "faces")
    (tmp_path / "src" / "__MACOSX" / "faces").mkdir(parents=True)
    code, _, err = prepare(capsys, "folder", "--source", tmp_path / "src", "--out", tmp_path / "out",
                           "--landmarks", "template")
    assert_one_line_error(code, err, tmp_path / "out", "only one class folder, 'faces'", "point --source at it")


def test_too_few_to_split_also_names_what_was_skipped(tmp_path, capsys):
    images_for_csv(tmp_path, 8)
    rows = ["path,expression"] + [f"img/{i}.jpg,{['happy', 'sad'][i % 2]}" for i in range(20)]
    (tmp_path / "faces.csv").write_text("\n".join(rows) + "\n")
    code, _, err = prepare(capsys, "csv", "--source", tmp_path / "faces.csv", "--out", tmp_path / "out")
    assert_one_line_error(code, err, tmp_path / "out", "8 usable faces (skipped: image file not found or unreadable (12))",
                          "too few to split")


def test_odd_headers_and_file_names(tmp_path):
    images_for_csv(tmp_path, 12)
    rows = ["path;age;"] + [f"img/{i}.jpg;{20 + i}" for i in range(11)] + ["img/11.jpg;Inf"]
    (tmp_path / "Faces.CSV").write_text("\n".join(rows) + "\n")  # a trailing delimiter, a capital suffix
    from occlusion_distill.registry import registry

    reading = registry("datasets").get("csv").obj.read(tmp_path, size=64)  # the folder: its one CSV
    assert dict(reading["skipped"].counts) == {"age not a number": 1}
    assert sum(len(p["images"]) for p in reading["splits"].values()) == 11
    for name in ("lost+found", "#recycle", "#snapshot"):
        assert is_leftover(f"{name}/x.jpg")


def test_mtcnn_points_are_stored_with_pixel_centres_at_half(monkeypatch):
    """facenet-pytorch gives pixel indices (centres at integers); the stored convention has centres at
    +0.5, the one `x -> W - x` flips exactly. Index 0 of the 96 px detection image is the centre of its
    first pixel: 0.5 of 96 px, i.e. 0.25 of a 48 px face."""
    from occlusion_distill.data import landmarks

    class FakeMTCNN:
        def detect(self, big, landmarks=True):
            assert big.shape[1:3] == (landmarks_size, landmarks_size)
            points = np.array([[[0, 0], [95, 0], [47.5, 47.5], [0, 95], [95, 95]]], np.float32)
            return [np.array([[0, 0, 96, 96]], np.float32)] * len(big), None, [points] * len(big)

    landmarks_size = landmarks.DETECT_SIZE
    detector = landmarks.Detector.__new__(landmarks.Detector)
    detector.mtcnn, detector.batch_size = FakeMTCNN(), 8
    found = detector.detect(np.zeros((2, 48, 48, 1), np.uint8))
    assert np.allclose(found[0], [[0.25, 0.25], [47.75, 0.25], [24, 24], [0.25, 47.75], [47.75, 47.75]])
    # and a flip of the image is a flip of the points: x -> 48 - x keeps the middle where it was
    assert np.isclose(48 - found[0][2, 0], found[0][2, 0])


def test_negative_seeds_are_one_line(capsys):
    with pytest.raises(SystemExit) as done:
        main(["run", "--preset", "smoke", "--seed", "-1", "--quiet"])
    err = capsys.readouterr().err
    assert done.value.code == 2 and "seed must be a whole number >= 0" in err and len(err.strip().splitlines()) == 1
