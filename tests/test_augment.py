"""Training augmentation: one draw per (seed, epoch, face), shared by the clean and occluded views, with
the landmarks (and so the occluder) following the face."""

import numpy as np
import pytest

from occlusion_distill.config import RunConfig
from occlusion_distill.data.augment import DEFAULTS, FaceAugment, resolve_augment
from occlusion_distill.data.paired import PairedFaces, face_seed, hflip, to_tensor
from occlusion_distill.data.synthfaces import generate
from occlusion_distill.errors import UsageError
from occlusion_distill.registry import create


def _dots(size=64, channels=1):
    """A dark face with one bright 2x2 dot at each of its 5 landmarks, away from the border."""
    lm = np.array([[22.0, 24.0], [42.0, 24.0], [32.0, 34.0], [24.0, 44.0], [40.0, 46.0]])
    image = np.full((size, size, channels), 20, np.uint8)
    for x, y in lm:
        image[int(y) - 1:int(y) + 1, int(x) - 1:int(x) + 1] = 255
    return image, lm


@pytest.mark.parametrize("channels", [1, 3])
def test_landmarks_move_with_the_face(channels):
    image, lm = _dots(channels=channels)
    augment = FaceAugment(brightness=0, contrast=0)
    moved_any = False
    for seed in range(8):
        out, moved = augment(image, lm, seed=seed)
        assert out.shape == image.shape and out.dtype == np.uint8 and moved.shape == (5, 2)
        moved_any |= not np.allclose(moved, lm, atol=0.5)
        weight = np.clip(out[..., 0].astype(float) - 20, 0, None)  # the dots over the background
        ys, xs = np.mgrid[:64, :64] + 0.5  # pixel centres
        for x, y in moved:  # each dot's centroid is where its landmark went, to a fraction of a pixel
            near = weight * ((xs - x) ** 2 + (ys - y) ** 2 < 16)
            assert near.sum() > 0
            cx, cy = (near * xs).sum() / near.sum(), (near * ys).sum() / near.sum()
            assert abs(cx - x) < 0.2 and abs(cy - y) < 0.2, (seed, x, y, cx, cy)
    assert moved_any


def test_a_seed_gives_one_draw_and_another_seed_another():
    image, lm = _dots(channels=3)
    augment = FaceAugment()
    a, la = augment(image, lm, seed=7)
    b, lb = augment(image, lm, seed=7)
    c, lc = augment(image, lm, seed=8)
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert not np.array_equal(a, c)


def test_zero_ranges_leave_the_face_as_it_was():
    image, lm = _dots()
    out, moved = FaceAugment(translate=0, scale=0, rotate=0, brightness=0, contrast=0)(image, lm, seed=3)
    assert np.array_equal(out, image) and np.allclose(moved, lm)


def test_both_views_share_the_draw_and_the_occluder_follows_the_moved_landmarks():
    faces = generate(6, size=40, channels=1, seed=1)
    targets = np.zeros(6, dtype=np.int64)
    occlusion = create("occlusions", "lower-half")
    augment = FaceAugment()
    plain = PairedFaces(faces, targets, occlusion, flip=True, seed=0)
    pairs = PairedFaces(faces, targets, occlusion, flip=True, seed=0, augment=augment)
    assert plain.deterministic_clean and not pairs.deterministic_clean
    elsewhere = 0
    for i in range(6):
        item = pairs[i]
        assert item["flipped"] == plain[i]["flipped"]  # the flip is drawn as without augmentation
        # what the item must be: the flipped face augmented, then occluded at its moved landmarks
        draw = face_seed(0, i, 0)
        image, lm = faces.images[i], faces.landmarks[i]
        if item["flipped"]:
            image, lm = hflip(image, lm)
        moved_image, moved = augment(image, lm, seed=face_seed(draw, i))
        assert torch_equal(item["clean"], to_tensor(moved_image[None])[0])
        want = occlusion.occlude_image(np.ascontiguousarray(moved_image), moved, seed=draw >> 1)
        assert torch_equal(item["occluded"], to_tensor(want[None])[0])
        unmoved = occlusion.occlude_image(np.ascontiguousarray(moved_image), lm, seed=draw >> 1)
        elsewhere += not torch_equal(item["occluded"], to_tensor(unmoved[None])[0])
    assert elsewhere >= 5  # at the unmoved landmarks the occluder would be elsewhere: the check can fail
    first = pairs[0]["clean"]
    pairs.set_epoch(1)
    assert not torch_equal(pairs[0]["clean"], first)


def torch_equal(a, b):
    return bool((a == b).all())


def test_options_resolve_with_defaults_and_bad_ones_are_one_line():
    assert resolve_augment(None) == {} and resolve_augment({}) == {}
    assert resolve_augment("default") == DEFAULTS
    assert resolve_augment({"rotate": 5}) == {**DEFAULTS, "rotate": 5.0}
    for bad, message in (({"rotation": 5}, "unknown option 'rotation'; did you mean 'rotate'"),
                         ({"scale": 2}, r"augment: scale must be in \[0, 0.5\]"),
                         ({"rotate": "ten"}, "augment: rotate must be"),
                         ("strong", "augment must be 'default' or a mapping")):
        with pytest.raises(UsageError, match=message) as err:
            resolve_augment(bad)
        assert "\n" not in str(err.value)


def test_a_run_with_augmentation_runs_its_teacher_online():
    cfg = RunConfig.from_options("smoke", augment="default")
    assert cfg.augment == DEFAULTS and cfg.teacher_outputs == "online"
    assert RunConfig.from_options("smoke").augment == {}
    with pytest.raises(UsageError, match="use --teacher-outputs online"):
        RunConfig.from_options("smoke", augment={"rotate": 5}, teacher_outputs="cached")
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
