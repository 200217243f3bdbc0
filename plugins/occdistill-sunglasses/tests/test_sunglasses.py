"""Tests of the sunglasses plugin, through the toolkit's public API and the installed entry point."""

import albumentations as A
import numpy as np
import pytest
from click.testing import CliRunner

from occlusion_distill.cli import cli
from occlusion_distill.data.pose import vary_pose
from occlusion_distill.data.synthfaces import generate
from occlusion_distill.errors import UsageError
from occlusion_distill.occlusions.regions import region_masks
from occlusion_distill.registry import create, registry
from occdistill_sunglasses import FRAMES, TINTS, Sunglasses


@pytest.fixture(scope="module")
def faces():
    """Built-in faces under random roll (+-25 degrees), scale and shift: a fair test of placement."""
    return vary_pose(generate(48, size=112, channels=3, seed=5), seed=5)


def test_registered_through_the_entry_point():
    entry = registry("occlusions").get("sunglasses")
    assert entry.obj is Sunglasses
    assert entry.origin.startswith("occdistill-sunglasses==")
    assert entry.description.startswith("Sunglasses")
    assert isinstance(create("occlusions", "sunglasses"), Sunglasses)


def test_settings_list_the_options_with_their_defaults():
    assert Sunglasses().settings() == {"jitter": 0.03, "opacity": 0.9, "p": 1.0, "styles": list(FRAMES),
                                       "temples": True, "tints": list(TINTS), "fill_mask": None,
                                       "version": Sunglasses.version}
    occ = Sunglasses(styles="round, aviator", tints=["black"], opacity=1, temples=False, jitter=0)
    assert occ.settings()["styles"] == ["round", "aviator"] and occ.settings()["opacity"] == 1.0


def test_same_seed_same_result_other_seeds_differ(faces):
    occ = Sunglasses()
    for img, lm in zip(faces.images[:4], faces.landmarks[:4]):
        a, ma = occ.occlude(img, lm, seed=7)
        occ.occlude(img, lm, seed=99)  # whatever was drawn in between
        b, mb = occ.occlude(img, lm, seed=7)
        assert np.array_equal(a, b) and np.array_equal(ma, mb)
        assert np.array_equal(occ.occlude_image(img, lm, seed=7), a)  # the training path draws the same
        assert any(not np.array_equal(a, occ.occlude(img, lm, seed=s)[0]) for s in range(8, 14))


def test_paints_inside_its_coverage_only(faces):
    occ = Sunglasses()
    for i, (img, lm) in enumerate(zip(faces.images[:8], faces.landmarks[:8])):
        out, mask = occ.occlude(img, lm, seed=i)
        changed = (out != img).any(axis=-1)
        assert mask.any() and changed[mask].mean() > 0.8 and not changed[~mask].any()


def test_opacity_one_hides_the_lenses_completely():
    img = np.full((112, 112, 3), 255, np.uint8)  # white: any see-through would show
    lm = np.array([[38, 48], [74, 48], [56, 66], [42, 84], [70, 84]], np.float32)
    out, _ = Sunglasses(styles="round", tints="black", opacity=1.0).occlude(img, lm, seed=0)
    assert out[48, 38].max() < 60 and out[48, 74].max() < 60  # dark over each eye
    seen, _ = Sunglasses(styles="round", tints="black", opacity=0.5).occlude(img, lm, seed=0)
    assert seen[48, 38].max() > 100  # half the white shows through


def test_keeps_shape_dtype_and_channels():
    for size, channels in ((32, 1), (64, 3), (112, 3), (256, 1)):
        face = generate(1, size=size, channels=channels, seed=2)
        img, lm = face.images[0], face.landmarks[0]
        for picture in (img, img[..., 0]) if channels == 1 else (img,):  # (H, W, 1) and (H, W) grey
            out, mask = Sunglasses().occlude(picture, lm, seed=1)
            assert out.shape == picture.shape and out.dtype == np.uint8 and mask.shape == (size, size)
            assert mask.any() and (out != picture).any()


def test_keypoints_unchanged_in_compose_after_flip_and_crop(faces):
    glasses = create("occlusions", "sunglasses", fill_mask=1)  # the mask target then shows what is hidden
    pipeline = A.Compose([A.HorizontalFlip(p=1.0), A.Crop(6, 4, 106, 108), glasses],
                         keypoint_params=A.KeypointParams(format="xy", remove_invisible=False), seed=5)
    for img, lm in zip(faces.images[:6], faces.landmarks[:6]):
        res = pipeline(image=img, keypoints=lm, mask=np.zeros(img.shape[:2], np.uint8))
        expected = np.stack([111 - lm[:, 0], lm[:, 1]], 1) - [6, 4]  # flipped (x -> W-1-x), then cropped
        assert np.allclose(np.asarray(res["keypoints"]), expected, atol=1e-4)
        assert res["image"].shape == (104, 100, 3) and res["mask"].any()


def test_hides_the_eyes_but_not_the_mouth_on_rolled_faces(faces):
    hidden = {"eyes": [], "mouth": [], "chin": []}
    for i, (img, lm) in enumerate(zip(faces.images, faces.landmarks)):
        _, mask = Sunglasses(temples=i % 2 == 0).occlude(img, lm, seed=i)
        for name, region in region_masks(lm, img.shape).items():
            if name in hidden and region.any():
                hidden[name].append((mask & region).sum() / region.sum())
    assert np.mean(hidden["eyes"]) > 0.9 and min(hidden["eyes"]) > 0.7, hidden["eyes"]
    assert np.mean(hidden["mouth"]) < 0.02 and np.mean(hidden["chin"]) < 0.02


def test_every_style_is_drawn(faces):
    img, lm = faces.images[0], faces.landmarks[0]
    masks = [Sunglasses(styles=s).occlude(img, lm, seed=0)[1] for s in FRAMES]
    assert all(m.any() for m in masks)
    assert not np.array_equal(masks[0], masks[1]) and not np.array_equal(masks[1], masks[2])


@pytest.mark.parametrize("bad", [dict(styles="cat-eye"), dict(styles=[]), dict(styles=3), dict(tints="pink"),
                                 dict(tints=["black", 1]), dict(opacity=0.2), dict(opacity=1.5),
                                 dict(opacity="dark"), dict(temples="yes"), dict(jitter=0.5), dict(jitter=True),
                                 dict(p=2)])
def test_bad_options_are_usage_errors(bad):
    with pytest.raises(UsageError, match="sunglasses|p "):
        create("occlusions", "sunglasses", **bad)


def test_cli_preview_writes_a_png(tmp_path):
    out = tmp_path / "s.png"
    result = CliRunner().invoke(cli, ["preview", "--occlusion", "sunglasses", "--occlusion-arg", "styles=aviator,round",
                                      "--occlusion-arg", "opacity=1", "--n", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.exists() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = CliRunner().invoke(cli, ["preview", "--occlusion", "sunglasses", "--occlusion-arg", "styles=monocle",
                                   "--out", str(tmp_path / "x.png")])
    # `cli` lets a UsageError through; the `occdistill` script's main() prints it and exits with code 2
    assert isinstance(bad.exception, UsageError) and "styles" in str(bad.exception)


def test_passes_the_occlusion_contract_checks():
    from occlusion_distill.checks import check_plugin

    report = check_plugin("sunglasses", "occlusions", min_speed=0.02)  # the speed floor: a benchmark matter
    assert report.passed, [r for r in report.results if not r.passed]
    coverage = next(r.detail for r in report.results if r.check == "coverage of each face region")
    assert "eyes 100%" in coverage and "mouth 0%" in coverage


def test_a_whole_run_under_sunglasses(tmp_path):
    import json

    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["run", "--occlusion", "sunglasses", "--occlusion-arg", "temples=false",
                                      "--preset", "smoke", "--epochs", "1", "--quiet", "--out", str(out),
                                      "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["occlusion"] == "sunglasses"
    assert metrics["origins"]["occlusion"].startswith("occdistill-sunglasses==")
    settings = json.loads((out / "config.json").read_text())
    assert '"temples": false' in json.dumps(settings)


def test_bench_occlusions_measures_it_beside_the_builtins(tmp_path):
    import json

    path = tmp_path / "bench.json"
    result = CliRunner().invoke(cli, ["bench", "occlusions", "--faces", "8", "--rounds", "1", "--calls", "5",
                                      "--quiet", "--json", str(path)])
    assert result.exit_code == 0, result.output
    measured = json.loads(path.read_text())["occlusions"]
    assert {"sunglasses", "mask", "vr-headset"} <= set(measured)
    assert measured["sunglasses"]["coverage"]["eyes"] > 0.7 and measured["sunglasses"]["images_per_s"] > 0
