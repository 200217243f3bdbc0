import numpy as np
import pytest

from occlusion_distill.data.synthfaces import EXPRESSIONS, generate
from occlusion_distill.errors import UsageError


def test_deterministic_per_seed_and_different_across_seeds():
    a, b, c = generate(12, 48, seed=5), generate(12, 48, seed=5), generate(12, 48, seed=6)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.landmarks, b.landmarks)
    for key in ("expression", "gender", "age"):
        assert np.array_equal(a.labels[key], b.labels[key])
    assert not np.array_equal(a.images, c.images)


def test_shapes_dtypes_grey_and_rgb_and_label_ranges():
    rgb, grey = generate(40, 32, channels=3, seed=1), generate(40, 64, channels=1, seed=1)
    assert rgb.images.shape == (40, 32, 32, 3) and rgb.images.dtype == np.uint8
    assert grey.images.shape == (40, 64, 64, 1)
    assert rgb.landmarks.shape == (40, 5, 2) and rgb.landmarks.dtype == np.float32
    assert set(rgb.labels["expression"]) <= set(range(len(EXPRESSIONS)))
    assert set(rgb.labels["gender"]) <= {0, 1}
    assert 1 <= rgb.labels["age"].min() and rgb.labels["age"].max() <= 80
    # the same seed draws the same faces at any size: labels agree across sizes
    assert np.array_equal(rgb.labels["expression"], grey.labels["expression"])


def test_landmarks_scale_with_image_size():
    small, big = generate(10, 64, seed=3), generate(10, 128, seed=3)
    assert np.allclose(big.landmarks, 2 * small.landmarks, atol=1e-3)


def test_landmark_geometry_follows_mtcnn_order():
    faces = generate(200, 64, seed=2)
    lm = faces.landmarks
    assert (lm >= 0).all() and (lm < 64).all()
    assert (lm[:, 0, 0] < lm[:, 1, 0]).all()  # image-left eye first
    assert (lm[:, 3, 0] < lm[:, 4, 0]).all()  # image-left mouth corner first
    eyes_y, mouth_y = lm[:, :2, 1].mean(1), lm[:, 3:, 1].mean(1)
    assert (eyes_y < lm[:, 2, 1]).all() and (lm[:, 2, 1] < mouth_y).all()  # eyes above nose above mouth
    # the nose lies between the eyes horizontally
    assert ((lm[:, 0, 0] < lm[:, 2, 0]) & (lm[:, 2, 0] < lm[:, 1, 0])).all()


def test_eye_landmarks_sit_on_the_eyes():
    """The pixel at an eye landmark is the dark iris: darker than the cheek below it, for nearly all faces."""
    faces = generate(150, 128, channels=1, seed=4)
    hits = 0
    for img, lm in zip(faces.images[..., 0].astype(float), faces.landmarks):
        ok = True
        for eye, corner in ((0, 3), (1, 4)):
            x, y = lm[eye].round().astype(int)
            cx, cy = (lm[eye] + 0.55 * (lm[corner] - lm[eye])).round().astype(int)
            iris = img[y - 1:y + 2, x - 1:x + 2].mean()
            cheek = img[cy - 1:cy + 2, cx - 1:cx + 2].mean()
            ok &= iris < cheek - 8
        hits += ok
    assert hits >= 0.9 * len(faces)


def test_label_noise_only_touches_a_share_of_training_labels():
    clean, noisy = generate(400, 32, seed=9), generate(400, 32, seed=9, label_noise=0.2)
    changed = (clean.labels["expression"] != noisy.labels["expression"]).mean()
    assert 0.1 < changed < 0.25  # 20% redrawn, 1/7 of those land on the true class
    assert np.array_equal(clean.images, noisy.images)


def test_bad_sizes_and_channels():
    with pytest.raises(UsageError, match="too small"):
        generate(2, 31)
    with pytest.raises(UsageError, match="channels"):
        generate(2, 32, channels=2)
