import albumentations as A
import numpy as np
import pytest

from occlusion_distill.data.synthfaces import generate
from occlusion_distill.errors import DataError, UsageError
from occlusion_distill.registry import create


@pytest.fixture(scope="module")
def faces():
    return generate(20, 64, seed=11)


def _eyes_mouth_hidden(mask, lm):
    def hidden(p):
        x, y = np.clip(p.round().astype(int), 0, mask.shape[0] - 1)
        return bool(mask[y, x])
    return [hidden(lm[0]), hidden(lm[1])], [hidden(lm[3]), hidden(lm[4])]


def test_halves_split_at_the_landmarks(faces):
    lower, upper = create("occlusions", "lower-half"), create("occlusions", "upper-half")
    for img, lm in zip(faces.images, faces.landmarks):
        _, m_low = lower.occlude(img, lm)
        _, m_up = upper.occlude(img, lm)
        eyes, mouth = _eyes_mouth_hidden(m_low, lm)
        assert eyes == [False, False] and mouth == [True, True]
        eyes, mouth = _eyes_mouth_hidden(m_up, lm)
        assert eyes == [True, True] and mouth == [False, False]
        assert not (m_low & m_up).any() and (m_low | m_up).all()  # complementary halves


def test_split_follows_the_face_not_the_image_middle():
    img = np.full((64, 64, 3), 200, np.uint8)
    low_face = np.array([[20, 40], [44, 40], [32, 50], [24, 58], [40, 58]], np.float32)  # face in the low part
    _, mask = create("occlusions", "lower-half").occlude(img, low_face)
    assert not mask[:44].any() and mask[46:].all()  # split halfway from eyes (y=40) to nose (y=50)
    rolled = np.array([[20, 30], [44, 42], [26, 46], [20, 56], [34, 63]], np.float32)  # tilted eye line
    _, mask = create("occlusions", "lower-half").occlude(img, rolled)
    rows_hidden = mask.argmax(axis=0)  # first hidden row per column goes down as x grows
    assert rows_hidden[10] < rows_hidden[50]


def test_drawing_fills_only_the_coverage_and_keeps_dtype_shape(faces):
    occ = create("occlusions", "upper-half", fill=(255, 0, 0))
    img, lm = faces.images[0], faces.landmarks[0]
    out, mask = occ.occlude(img, lm)
    assert out.dtype == np.uint8 and out.shape == img.shape
    assert (out[mask] == [255, 0, 0]).all() and np.array_equal(out[~mask], img[~mask])
    grey = img[..., :1].copy()
    out, mask = create("occlusions", "upper-half").occlude(grey, lm)
    assert out.shape == grey.shape and (out[mask] == 0).all()


def test_in_albumentations_compose_keypoints_unchanged_and_mask_target():
    faces = generate(4, 96, seed=3)
    lower = create("occlusions", "lower-half", fill_mask=1)  # the mask target then shows what is hidden
    pipeline = A.Compose([A.HorizontalFlip(p=1.0), A.CenterCrop(80, 80), lower],
                         keypoint_params=A.KeypointParams(format="xy", remove_invisible=False))
    for img, lm in zip(faces.images, faces.landmarks):
        res = pipeline(image=img, keypoints=lm, mask=np.zeros(img.shape[:2], np.uint8))
        expected = np.stack([95 - lm[:, 0], lm[:, 1]], 1) - 8  # flipped (albumentations: x -> W-1-x), cropped
        assert np.allclose(np.asarray(res["keypoints"]), expected, atol=1e-4)
        assert res["image"].shape == (80, 80, 3)
        kp = np.asarray(res["keypoints"])
        eyes_y, mouth = kp[:2, 1].mean(), kp[3:, 1].mean()
        assert res["mask"][int(mouth), int(kp[3:, 0].mean())] == 1
        assert res["mask"][int(eyes_y), int(kp[:2, 0].mean())] == 0
        assert (res["image"][res["mask"] == 1] == 0).all()


def test_none_hides_nothing(faces):
    out, mask = create("occlusions", "none").occlude(faces.images[0], faces.landmarks[0])
    assert not mask.any() and np.array_equal(out, faces.images[0])


def test_bad_parameters_and_missing_keypoints(faces):
    with pytest.raises(UsageError, match="fill"):
        create("occlusions", "lower-half", fill="blue")
    with pytest.raises(UsageError, match="split"):
        create("occlusions", "lower-half", split="middle")
    with pytest.raises(DataError, match="5 landmarks"):
        create("occlusions", "lower-half")(image=faces.images[0])
    with pytest.raises(DataError, match="5 landmarks"):
        create("occlusions", "lower-half").occlude(faces.images[0], faces.landmarks[0][:3])


def test_probability_p_is_honoured_and_seeded(faces):
    never = create("occlusions", "lower-half", p=0.0)
    out, mask = never.occlude(faces.images[0], faces.landmarks[0], seed=1)
    assert not mask.any() and np.array_equal(out, faces.images[0])
    half = create("occlusions", "lower-half", p=0.5)
    hits = [half.occlude(faces.images[0], faces.landmarks[0], seed=s)[1].any() for s in range(200)]
    assert 60 < sum(hits) < 140
    again = [half.occlude(faces.images[0], faces.landmarks[0], seed=s)[1].any() for s in range(200)]
    assert hits == again


def test_settings_report_every_constructor_argument():
    assert create("occlusions", "upper-half", split=0.6).settings() == {"fill": 0, "fill_mask": None, "p": 1.0,
                                                                        "split": 0.6, "version": 1}


@pytest.fixture(scope="module")
def faces112():
    return generate(120, 112, seed=21)


def test_mask_and_headset_hide_their_regions_as_bench_occlusions_measures():
    from occlusion_distill.bench.occlusions import run

    result = run(["mask", "vr-headset"], n_faces=512, calls=5, rounds=1)  # >= 500 faces of varied pose
    mask = result["occlusions"]["mask"]["coverage"]
    assert mask["mouth"] >= 0.9 and mask["nose"] >= 0.7 and mask["eyes"] <= 0.05, mask
    vr = result["occlusions"]["vr-headset"]["coverage"]
    assert vr["eyes"] >= 0.95 and vr["brows"] >= 0.8 and vr["mouth"] <= 0.05, vr


OCCLUDERS = ["lower-half", "upper-half", "random-patch", "mask", "vr-headset"]


@pytest.mark.parametrize("name", OCCLUDERS)
def test_contract_deterministic_shape_dtype_and_paints_inside_coverage(name, faces112):
    occ = create("occlusions", name)
    img, lm = faces112.images[3], faces112.landmarks[3]
    a, ma = occ.occlude(img, lm, seed=7)
    b, mb = occ.occlude(img, lm, seed=7)
    assert np.array_equal(a, b) and np.array_equal(ma, mb)
    assert np.array_equal(occ.occlude_image(img, lm, seed=7), a)  # the training path draws the same
    if name not in ("lower-half", "upper-half"):  # the halves have no randomness
        assert any(not np.array_equal(a, occ.occlude(img, lm, seed=s)[0]) for s in range(8, 14))
    changed = (a != img).any(axis=-1)
    assert changed[ma].mean() > 0.8 and not changed[~ma].any()  # paints inside its coverage only
    for size, channels in ((32, 1), (64, 3), (256, 1), (320, 3)):
        small = generate(2, size, channels=channels, seed=1)
        out, m = occ.occlude(small.images[0], small.landmarks[0], seed=1)
        assert out.shape == small.images[0].shape and out.dtype == np.uint8 and m.any()
        assert m.shape == (size, size)
        two_d = small.images[0][..., 0] if channels == 1 else None  # a (H, W) grey image stays (H, W)
        if two_d is not None:
            assert occ.occlude(two_d, small.landmarks[0], seed=1)[0].shape == (size, size)


@pytest.mark.parametrize("name", OCCLUDERS)
def test_contract_in_compose_after_flip_and_crop_keypoints_unchanged(name, faces112):
    occ = create("occlusions", name, fill_mask=1)
    pipeline = A.Compose([A.HorizontalFlip(p=1.0), A.Crop(6, 4, 106, 108), occ],
                         keypoint_params=A.KeypointParams(format="xy", remove_invisible=False), seed=5)
    for img, lm in zip(faces112.images[:6], faces112.landmarks[:6]):
        res = pipeline(image=img, keypoints=lm, mask=np.zeros(img.shape[:2], np.uint8))
        expected = np.stack([111 - lm[:, 0], lm[:, 1]], 1) - [6, 4]  # flipped (x -> W-1-x), then cropped
        assert np.allclose(np.asarray(res["keypoints"]), expected, atol=1e-4)
        assert res["image"].shape == (104, 100, 3)
        # the occluder was placed on the flipped, cropped face: what it hides matches its own coverage
        ref_img = A.Crop(6, 4, 106, 108)(image=img[:, ::-1].copy())["image"]
        changed = (res["image"] != ref_img).any(axis=-1)
        assert res["mask"].any() and not changed[res["mask"] == 0].any()


def test_wearables_reject_bad_parameters():
    with pytest.raises(UsageError, match="unknown colour"):
        create("occlusions", "mask", colours=["sky"])
    with pytest.raises(UsageError, match="variants"):
        create("occlusions", "mask", variants=["gas"])
    with pytest.raises(UsageError, match="perspective"):
        create("occlusions", "vr-headset", perspective=2)
    with pytest.raises(UsageError, match="colour"):
        create("occlusions", "vr-headset", colours="rainbow")
    with pytest.raises(UsageError, match="jitter"):
        create("occlusions", "mask", jitter="lots")


def test_random_patch_stays_on_the_face_and_rejects_bad_parameters(faces112):
    from occlusion_distill.occlusions import coverage_by_region

    occ = create("occlusions", "random-patch", num_patches=2, size=0.5, fill=(10, 20, 30))
    on_face = []
    for i, (img, lm) in enumerate(zip(faces112.images[:40], faces112.landmarks[:40])):
        out, m = occ.occlude(img, lm, seed=i)
        assert (out[m] == [10, 20, 30]).all()  # a constant fill is exactly that colour (no blending)
        on_face.append(np.nansum(list(coverage_by_region(m, lm).values())) > 0)
        iod = float(np.hypot(*(lm[1] - lm[0])))
        ys, xs = np.nonzero(m)
        centre = lm[:2].mean(axis=0)
        # patches (half-diagonal <= 0.36 IOD) centred in the face box never reach far from the face
        assert np.hypot(xs + 0.5 - centre[0], ys + 0.5 - centre[1]).max() < 2.2 * iod
    assert np.mean(on_face) > 0.9
    for bad in (dict(num_patches=(3, 1)), dict(num_patches=0), dict(num_patches=1.5), dict(size=-1),
                dict(size=(0.5, "big")), dict(fill="blue"), dict(fill=(300, 0, 0))):
        with pytest.raises(UsageError, match="random-patch|fill"):
            create("occlusions", "random-patch", **bad)


def test_region_model_follows_roll_and_scale():
    from occlusion_distill.data.pose import similarity, warp_face
    from occlusion_distill.occlusions import region_masks

    face = generate(1, 112, seed=4)
    img, lm = face.images[0], face.landmarks[0]
    _, upright = warp_face(img, lm, similarity((112, 112), 0.7, 0.0, (0.0, 0.0)))  # small: regions all inside
    _, moved = warp_face(img, lm, similarity((112, 112), 0.56, 20.0, (3.0, -2.0)))
    before, after = region_masks(upright, img.shape[:2]), region_masks(moved, img.shape[:2])
    for name in before:  # areas scale with the face (0.8^2), shapes turn with it
        assert after[name].sum() == pytest.approx(0.64 * before[name].sum(), rel=0.12), name
    eyes = np.argwhere(after["eyes"])[:, ::-1] + 0.5
    left = eyes[:, 0] < moved[:2, 0].mean()
    assert abs(eyes[left, 1].mean() - moved[0, 1]) < 1.5 and abs(eyes[~left, 1].mean() - moved[1, 1]) < 1.5


@pytest.mark.parametrize("name", ["lower-half", "mask", "vr-headset"])
def test_placement_follows_any_roll_even_upside_down(name):
    from occlusion_distill.data.pose import similarity, warp_face
    from occlusion_distill.occlusions import coverage_by_region

    face = generate(1, 112, seed=8)
    occ = create("occlusions", name)
    upright = coverage_by_region(occ.occlude(face.images[0], face.landmarks[0], seed=1)[1], face.landmarks[0])
    for roll in (100.0, 180.0, -135.0):
        img, lm = warp_face(face.images[0], face.landmarks[0], similarity((112, 112), 0.8, roll, (0.0, 0.0)))
        cov = coverage_by_region(occ.occlude(img, lm, seed=1)[1], lm)
        hidden = "mouth" if name != "vr-headset" else "eyes"
        visible = "eyes" if name != "vr-headset" else "mouth"
        assert cov[hidden] > 0.9 and cov[visible] < 0.1, (roll, cov, upright)


def test_bad_images_landmarks_and_probability_are_one_line_errors(faces):
    img, lm = faces.images[0], faces.landmarks[0]
    occ = create("occlusions", "mask")
    with pytest.raises(DataError, match="finite"):
        occ.occlude(img, np.full((5, 2), np.nan, np.float32))
    with pytest.raises(DataError, match="coincide"):
        occ.occlude(img, np.array([[20, 20], [20, 20], [25, 30], [20, 40], [30, 40]], np.float32))
    with pytest.raises(DataError, match="uint8"):
        occ.occlude(img.astype(np.float32), lm)
    for bad in (2, "abc", -0.1):
        with pytest.raises(UsageError, match="probability"):
            create("occlusions", "mask", p=bad)
    with pytest.raises(UsageError, match="variants"):
        create("occlusions", "mask", variants=5)
    with pytest.raises(UsageError, match="fill"):
        create("occlusions", "random-patch", fill=(1, 2))
    grey = img[..., :1].copy()
    out, m = create("occlusions", "lower-half", fill=(255, 0, 0)).occlude(grey, lm)
    assert (out[m] == 76).all()  # an RGB fill on a grey face is its luminance (0.299 * 255)


# -- one rendering method: render -> coverage and drawing; old-style plugins; shared argument checks ----

from occlusion_distill.occlusions import Occlusion, raster  # noqa: E402
from occlusion_distill.occlusions.base import check_choices, check_number  # noqa: E402


class Square(Occlusion):
    """A half-transparent square over the nose, written with render() only; counts its renders."""

    renders = 0

    def sample(self, landmarks, shape):
        return {"centre": landmarks[2], "half": 6.0}

    def render(self, shape, centre, half):
        type(self).renders += 1
        box = raster.bbox(np.array([centre - half, centre + half]), shape, pad=0)
        if box is None:
            return None, None, None
        alpha = np.zeros((box[1] - box[0], box[3] - box[2]), np.uint8)
        alpha[1:-1, 1:-1] = 128  # a rim of untouched pixels inside the box, half opacity within
        return box, alpha, None  # None: painted in `fill`


def test_render_gives_both_the_drawing_and_the_coverage_from_one_render_per_face(faces):
    occ = Square(fill=(250, 0, 0), fill_mask=7)
    img, lm = faces.images[0], faces.landmarks[0]
    Square.renders = 0
    out, mask = occ.occlude(img, lm, seed=1)
    assert Square.renders == 1
    box, alpha, _ = occ.render(img.shape[:2], **occ.sample(lm, img.shape[:2]))
    expected = np.zeros(img.shape[:2], bool)
    expected[box[0]:box[1], box[2]:box[3]] = alpha > 0
    assert np.array_equal(mask, expected) and np.array_equal(occ.coverage(img.shape[:2], centre=lm[2], half=6.0),
                                                             expected)
    changed = (out != img).any(axis=-1)
    assert changed[mask].mean() > 0.9 and not changed[~mask].any()
    red = out[mask].astype(int)  # half way between the face and the fill colour
    assert np.abs(red[:, 0] - (250 * 128 + img[mask][:, 0].astype(int) * 127) / 255).max() <= 1
    assert np.array_equal(occ.occlude_image(img, lm, seed=1), out)
    Square.renders = 0
    pipeline = A.Compose([occ], keypoint_params=A.KeypointParams(format="xy", remove_invisible=False), seed=0)
    res = pipeline(image=img, keypoints=lm, mask=np.zeros(img.shape[:2], np.uint8))
    assert Square.renders == 1  # one render for the image and the mask target together
    assert np.array_equal(res["image"], out) and np.array_equal(res["mask"] == 7, mask)
    off = np.array([[-90, -90], [-80, -90], [-85, -80], [-88, -70], [-82, -70]], np.float32)
    out, mask = occ.occlude(img, off)  # an occluder off the image: nothing drawn or hidden
    assert not mask.any() and np.array_equal(out, img)


def test_render_paints_grey_faces_with_the_luminance_of_the_layer(faces):
    grey = faces.images[1][..., :1].copy()
    out, mask = Square(fill=200).occlude(grey, faces.landmarks[1])
    assert out.shape == grey.shape and mask.any()
    assert np.abs(out[mask][:, 0].astype(int) - (200 * 128 + grey[mask][:, 0].astype(int) * 127) / 255).max() <= 1


def test_a_plugin_written_against_coverage_and_draw_keeps_working_with_one_warning(faces):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")

        class OldStripe(Occlusion):  # today's documented interface: sample + coverage + draw
            def sample(self, landmarks, shape):
                return {"row": int(landmarks[2, 1]), "shade": int(self.random_generator.integers(50, 200))}

            def coverage(self, shape, row, shade):
                mask = np.zeros(shape[:2], bool)
                mask[max(row - 3, 0):row + 3] = True
                return mask

            def draw(self, image, row, shade):
                out = image.copy()
                out[self.coverage(image.shape[:2], row, shade)] = shade
                return out

    assert [w.category for w in caught] == [DeprecationWarning]
    message = str(caught[0].message)
    assert "\n" not in message and "OldStripe" in message and "render()" in message
    assert caught[0].filename == __file__  # points at the plugin's class, not at the package
    occ = OldStripe(fill_mask=1)
    img, lm = faces.images[2], faces.landmarks[2]
    out, mask = occ.occlude(img, lm, seed=3)
    row = int(lm[2, 1])
    assert mask[row].all() and mask.sum() == 6 * img.shape[1]
    assert len(np.unique(out[mask])) == 1 and np.array_equal(out[~mask], img[~mask])
    assert np.array_equal(occ.occlude_image(img, lm, seed=3), out)
    res = A.Compose([occ], keypoint_params=A.KeypointParams(format="xy", remove_invisible=False), seed=0)(
        image=img, keypoints=lm, mask=np.zeros(img.shape[:2], np.uint8))
    assert np.array_equal(res["mask"] == 1, mask) and np.allclose(res["keypoints"], lm)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")

        class MaskOnly(Occlusion):  # coverage alone, filled with `fill`: nothing to warn about
            def coverage(self, shape):
                return np.ones(shape[:2], bool)

    assert caught == []
    assert (MaskOnly(fill=9).occlude(img, lm)[0] == 9).all()


def test_builtins_write_render_only_and_the_halves_coverage_only():
    from occlusion_distill.occlusions import LowerHalf, NoOcclusion, RandomPatch, SurgicalMask, VRHeadset

    for cls in (SurgicalMask, VRHeadset, RandomPatch):
        assert "render" in vars(cls) and "coverage" not in vars(cls) and "draw" not in vars(cls), cls
        assert cls._render_once
    for cls in (LowerHalf, NoOcclusion):
        assert not cls._renders


def test_check_number_rejects_bools_nan_strings_and_out_of_range_in_one_line():
    assert check_number(0.25, "jitter", 0, 0.5, plugin="p") == 0.25
    assert check_number(np.float32(0.5), "jitter", 0, 0.5, plugin="p") == 0.5
    assert check_number(3.0, "n", 1, 8, plugin="p", integer=True) == 3 and isinstance(
        check_number(3.0, "n", 1, 8, plugin="p", integer=True), int)
    assert check_number(1e9, "scale", 0, plugin="p") == 1e9  # hi None: unbounded
    for bad in (True, False, float("nan"), "0.1", None, [0.1], -0.01, 0.51):
        with pytest.raises(UsageError) as err:
            check_number(bad, "jitter", 0, 0.5, plugin="my-plugin", unit="eye distances")
        assert str(err.value) == f"my-plugin: jitter must be in [0, 0.5] (eye distances), not {bad!r}"
    with pytest.raises(UsageError, match=r"^p: n must be an integer in \[1, 8\], not 2.5$"):
        check_number(2.5, "n", 1, 8, plugin="p", integer=True)
    with pytest.raises(UsageError, match="mask: jitter must be in"):
        create("occlusions", "mask", jitter=True)  # True was read as 1.0 before; a bool is no distance
    with pytest.raises(UsageError, match="lower-half: split"):
        create("occlusions", "lower-half", split=float("nan"))


def test_check_choices_takes_a_name_a_comma_list_or_a_list():
    table = {"red": 1, "green": 2, "blue": 3}
    assert check_choices(None, table, "colours", plugin="p") == ["red", "green", "blue"]
    assert check_choices("green", table, "colours", plugin="p") == ["green"]
    assert check_choices("blue, red", table, "colours", plugin="p") == ["blue", "red"]
    assert check_choices(("red", "red"), table, "colours", plugin="p") == ["red", "red"]
    with pytest.raises(UsageError) as err:
        check_choices("red,purple", table, "colours", plugin="p")
    assert str(err.value) == "p: unknown colour 'purple' in colours; choose from red, green, blue"
    for bad in ([], 5, [1, 2], {"red"}):
        with pytest.raises(UsageError, match=r"^p: colours must be names among red, green, blue .*not "):
            check_choices(bad, table, "colours", plugin="p")
    assert create("occlusions", "mask", variants="n95, cloth").variants == ["n95", "cloth"]


def test_face_seeds_keep_their_two_streams():
    from occlusion_distill.data.paired import face_seed
    from occlusion_distill.tools import preview

    # pinned: previews, bench and checks draw from (seed, index); training and evaluation sets from
    # (seed, epoch, index). Changing either would change every occluded pixel they produce.
    assert [face_seed(0, 1), face_seed(3, 5)] == [3964924996, 3746004709]
    assert [face_seed(0, 1, epoch=0), face_seed(3, 5, epoch=0)] == [3831201730, 323678886]
    assert preview.face_seed is face_seed
