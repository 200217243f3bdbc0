"""``occdistill preview`` and ``occdistill bench occlusions``, and the pose variation they rely on."""

import json
import sys

import numpy as np
from PIL import Image

from occlusion_distill.data.pose import similarity, vary_pose, warp_face
from occlusion_distill.data.synthfaces import generate

from conftest import run_main


def test_warp_moves_landmarks_with_the_pixels():
    img = np.zeros((64, 64, 1), np.uint8)
    lm = np.array([[20.5, 24.5], [40.5, 24.5], [30.5, 34.5], [22.5, 44.5], [38.5, 44.5]], np.float32)
    for x, y in lm:
        img[int(y), int(x)] = 255  # one bright pixel whose centre is the landmark
    out, moved = warp_face(img, lm, similarity((64, 64), 1.0, 30.0, (2.0, -3.0)))
    assert out.shape == img.shape
    for x, y in moved:
        patch = out[int(y) - 1:int(y) + 2, int(x) - 1:int(x) + 2, 0]
        assert patch.max() > 60, (x, y)  # the dot (blurred by interpolation) is where its landmark went


def test_vary_pose_is_seeded_and_keeps_labels():
    faces = generate(6, 48, seed=2)
    a, b = vary_pose(faces, seed=3), vary_pose(faces, seed=3)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.landmarks, b.landmarks)
    assert not np.array_equal(a.landmarks, faces.landmarks)
    assert all(np.array_equal(a.labels[k], faces.labels[k]) for k in faces.labels)


def test_preview_writes_a_grid_of_pairs(cli, tmp_path):
    out = tmp_path / "grid.png"
    res = cli("preview", "--occlusion", "mask", "--n", "6", "--columns", "3", "--tile", "64", "--out", out)
    assert res.returncode == 0, res.stderr
    grid = np.asarray(Image.open(out))
    # 3 pairs of 64 px tiles per row, 2 rows, a title band: see preview.py for the spacing
    assert grid.shape == (22 + 2 * 64 + 3 * 10, 3 * (2 * 64 + 2) + 4 * 10, 3)
    left, right = grid[32:96, 10:74], grid[32:96, 76:140]  # the first pair: clean, then masked
    assert (left != right).any(axis=-1).mean() > 0.15
    small = tmp_path / "small.png"
    res = cli("preview", "--occlusion", "vr-headset", "--channels", "1", "--as-stored", "--palette",
              "--n", "4", "--out", small)
    assert res.returncode == 0, res.stderr
    assert small.stat().st_size < 300_000


def test_preview_bad_input_is_one_line(tmp_path):
    res = run_main("preview", "--occlusion", "mask", "--out", tmp_path / "grid.jpg")
    assert res.returncode == 2 and ".png" in res.stderr and "Traceback" not in res.stderr
    res = run_main("preview", "--occlusion", "maks", "--out", tmp_path / "g.png")
    assert res.returncode == 2 and "mask" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = run_main("preview", "--occlusion", "mask", "--occlusion-arg", "colours=sky", "--out", tmp_path / "g.png")
    assert res.returncode == 2 and "colour" in res.stderr and not (tmp_path / "g.png").exists()


def test_bench_occlusions_json_schema_and_third_party_plugin(cli, tmp_path):
    from test_registry import PLUGIN_SOURCE, make_distribution

    make_distribution(tmp_path, "occdistill-stripe", "occd_stripe_bench", PLUGIN_SOURCE,
                      {"occlusion_distill.occlusions": {"stripe": "occd_stripe_bench:Stripe"}})
    env = {"PYTHONPATH": str(tmp_path) + ":" + ":".join(sys.path)}
    out = tmp_path / "bench.json"
    res = cli("bench", "occlusions", "--faces", "24", "--rounds", "1", "--calls", "10", "--json", out, "--quiet",
              env=env)
    assert res.returncode == 0, res.stderr
    data = json.loads(out.read_text())
    assert data["reference"]["name"].startswith("CoarseDropout") and data["reference"]["images_per_s"] > 0
    names = set(data["occlusions"])
    assert {"none", "lower-half", "upper-half", "random-patch", "mask", "vr-headset", "stripe"} <= names
    for name, entry in data["occlusions"].items():
        assert entry["images_per_s"] > 0
        assert set(entry["coverage"]) == {"brows", "eyes", "nose", "mouth", "chin"}
        assert all(v is None or 0.0 <= v <= 1.0 for v in entry["coverage"].values())
    stripe = data["occlusions"]["stripe"]["coverage"]  # a 6 px stripe through the eyes
    assert stripe["eyes"] > 0.2 and stripe["mouth"] == 0.0
    assert data["setup"]["origins"]["stripe"] == "occdistill-stripe==1.2.3"
    assert "stripe" in res.stdout and "img/s" in res.stdout


def test_bench_reports_a_failing_plugin_without_dying(tmp_path, monkeypatch):
    from occlusion_distill.bench.occlusions import run
    from occlusion_distill.occlusions import Occlusion
    from occlusion_distill.registry import registry

    class Faulty(Occlusion):
        """Raises on every face."""

        def sample(self, landmarks, shape):
            raise RuntimeError("no face for me")

    reg = registry("occlusions")
    reg.add("faulty", Faulty, origin="faulty-pkg==0.1")
    try:
        result = run(["faulty", "none"], n_faces=4, calls=2, rounds=1)
    finally:
        reg.unregister("faulty")
    assert "no face for me" in result["occlusions"]["faulty"]["error"]
    assert result["occlusions"]["none"]["coverage"]["eyes"] == 0.0
