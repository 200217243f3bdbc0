"""Who normalises a face (the model, with its backbone's own mean/std), what the run cache key holds
(everything that changes a trained model or a teacher output, precision included), and the landmark
flip against albumentations' own."""

import json
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch

from occlusion_distill.config import RunConfig
from occlusion_distill.data.paired import PairedFaces, hflip, to_tensor
from occlusion_distill.data.synthfaces import generate
from occlusion_distill.models import build_model
from occlusion_distill.registry import create

ROOT = Path(__file__).resolve().parents[1]
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _images(n=4, size=32, channels=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, channels), dtype=np.uint8)


def _by_hand(images, mean, std):
    """What the backbone should see: pixels / 255, less the mean, over the std, per channel."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).double() / 255.0
    return ((x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)).float()


# --- 1. input normalisation -------------------------------------------------------------------------

def test_timm_backbone_sees_its_pretrained_mean_and_std():
    model = build_model("resnet10t", in_chans=3, image_size=32, output_dim=3).eval()
    images = _images()
    with torch.no_grad():
        out = model(to_tensor(images))
        wanted = model.head(model.backbone(_by_hand(images, IMAGENET_MEAN, IMAGENET_STD)))
    assert torch.allclose(out.logits, wanted, atol=1e-5)


def test_normalisation_is_read_from_the_timm_model_config():
    from occlusion_distill.models.backbones import _timm, input_normalisation

    # whatever the model's pretrained config says, not ImageNet's constants
    net = _timm("resnet10t", in_chans=3, pretrained_cfg_overlay={"mean": (0.1, 0.2, 0.3), "std": (0.3, 0.2, 0.1)})
    assert input_normalisation(net, 3) == ((0.1, 0.2, 0.3), (0.3, 0.2, 0.1))
    vit = _timm("vit_tiny_patch16_224", in_chans=3)  # its weights were trained on (x - 0.5) / 0.5
    assert input_normalisation(vit, 3) == ((0.5,) * 3, (0.5,) * 3)


def test_grey_faces_get_one_mean_and_std_standing_for_red_green_and_blue():
    # timm gives a 1-channel model the sum of its RGB stem filters: a grey value is read as that value in
    # R, G and B, so its one mean and std are the means of the three
    model = build_model("resnet10t", in_chans=1, image_size=32, output_dim=2).eval()
    mean, std = (float(np.mean(IMAGENET_MEAN)),), (float(np.mean(IMAGENET_STD)),)
    images = _images(channels=1)
    with torch.no_grad():
        out = model(to_tensor(images))
        wanted = model.head(model.backbone(_by_hand(images, mean, std)))
    assert torch.allclose(out.logits, wanted, atol=1e-5)
    assert model.input_mean.shape == (1, 1, 1, 1)


def test_inception_resnet_v1_gets_facenets_own_standardisation_for_grey_and_rgb():
    pytest.importorskip("facenet_pytorch")
    for channels in (1, 3):
        model = build_model("inception-resnet-v1", in_chans=channels, image_size=80, output_dim=2)
        images = _images(1, 8, channels)
        wanted = (torch.from_numpy(images).permute(0, 3, 1, 2).float() - 127.5) / 128.0
        assert torch.allclose(model.normalise(to_tensor(images)), wanted, atol=1e-6)  # fixed_image_standardization


def test_simple_cnn_inputs_are_bitwise_todays():
    model = build_model("simple-cnn", in_chans=3, image_size=32, output_dim=3).eval()
    every = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=3)
    old = torch.from_numpy(every).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)  # the [-1, 1] mapping
    assert torch.equal(model.normalise(to_tensor(every)), old)
    images = _images(8)
    with torch.no_grad():
        old = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
        assert torch.equal(model(to_tensor(images)).logits, model.head(model.backbone(old)))
    # the state_dict has exactly the keys it had: checkpoints and cached models load as before
    assert not any("input_" in k for k in model.state_dict())


def test_model_inputs_are_unnormalised_everywhere_before_the_model():
    faces = generate(6, 32, seed=1)
    faces.images[0, 0, 0] = 255
    faces.images[0, 0, 1] = 0
    ds = PairedFaces(faces, faces.labels["expression"], create("occlusions", "lower-half"), flip=True, seed=2)
    views = [ds[i][view] for i in range(len(ds)) for view in ("clean", "occluded")]
    views += list(ds.clean_views(False)) + list(ds.clean_views(True))
    for v in views:
        assert v.dtype == torch.float32 and v.min() >= 0.0 and v.max() <= 1.0
    assert to_tensor(faces.images[:1])[0, :, 0, 0].tolist() == [1.0, 1.0, 1.0]
    assert to_tensor(faces.images[:1])[0, :, 0, 1].tolist() == [0.0, 0.0, 0.0]


def test_a_backbone_declaring_a_wrong_number_of_means_is_refused():
    from occlusion_distill.errors import PluginError
    from occlusion_distill.models.backbones import input_normalisation

    net = torch.nn.Conv2d(3, 4, 3)
    net.input_mean, net.input_std = 0.25, (0.5, 0.4, 0.3)  # one value stands for every channel
    assert input_normalisation(net, 3) == ((0.25,) * 3, (0.5, 0.4, 0.3))
    for mean, std, message in (((0.5, 0.5), (0.5, 0.5), "'mine' declares 2 input means for 3-channel"),
                               ((0.5,), (0.0,), "each std positive"), ((0.5,), (float("nan"),), "finite"),
                               ("grey", (0.5,), "give numbers"), ((0.5,), None, "declare both")):
        net.input_mean, net.input_std = mean, std
        with pytest.raises(PluginError, match=message):
            input_normalisation(net, 3, "mine")


# --- 2. cache keys ----------------------------------------------------------------------------------

def _keys(settings_change=None, **options):
    from occlusion_distill.protocol.pipeline import _student_key, _teacher_key, build_parts, resolved_settings

    cfg = RunConfig.from_options("smoke", **options)
    parts = build_parts(cfg)
    settings = {**resolved_settings(cfg, parts), **(settings_change or {})}
    t = _teacher_key(cfg, settings)
    base = _student_key(cfg, settings, t, "finetune", {}, parts.origins["distiller"], uses_teacher=False)
    return t, base, _student_key(cfg, settings, t, cfg.distiller, settings["distiller"], parts.origins["distiller"])


def test_runs_differing_only_in_amp_precision_get_different_keys():
    fp32 = _keys(amp="off")
    bf16 = _keys(amp="bf16")
    for a, b in zip(fp32, bf16):
        assert a != b
    # what a GPU resolves "auto" or "fp16" to: one more precision, one more key
    fp16 = _keys(settings_change={"precision": "fp16", "device": "cuda:0"})
    assert len({json.dumps(k[0], sort_keys=True, default=str) for k in (fp32, bf16, fp16)}) == 3
    # "auto" is resolved before keying: on CPU it is fp32, the same model as "off"
    if not torch.cuda.is_available():
        assert _keys(amp="auto") == fp32


def test_other_numerics_settings_change_the_keys_and_idle_ones_do_not():
    t0, b0, s0 = _keys()
    t, b, s = _keys(compile=True)
    assert t != t0 and b != b0 and s != s0
    t, b, s = _keys(settings_change={"device": "cuda:1"})
    assert t != t0
    assert _keys(settings_change={"device": "cuda:1"}) == _keys(settings_change={"device": "cuda:0"})
    # the students learn from teacher outputs computed once (fp32) or at each step (under autocast);
    # the baseline never runs the teacher, so it is shared
    t, b, s = _keys(teacher_outputs="online")
    assert t == t0 and b == b0 and s != s0
    # how often a stage is saved, or how many loader workers read faces, changes no weight
    assert _keys(checkpoint_every=5, num_workers=1) == (t0, b0, s0)
    # a backbone option makes another network; none given leaves the key as it was before the option existed
    t, b, s = _keys(backbone_args={"norm": "batchnorm"})
    assert t != t0 and b != b0 and s != s0 and t["backbone_args"] == {"norm": "batchnorm"}
    assert "backbone_args" not in t0
    # so does augmentation; with it the students learn from a teacher run online
    t, b, s = _keys(augment={"rotate": 5})
    assert t != t0 and b != b0 and s != s0 and t["augment"]["rotate"] == 5 and s["teacher_outputs"] == "online"
    assert "augment" not in t0 and "augment" not in s0
    # mixing is the students' alone: the teacher's key stays, the baseline's and students' change
    t, b, s = _keys(mix="cutmix")
    assert t == t0 and b != b0 and s != s0 and s["mix"] == {"mode": "cutmix", "alpha": 1.0}
    assert s["teacher_outputs"] == "online" and "mix" not in b0


def test_committed_suite_results_are_still_recognised():
    """bench run --resume skips a finished run by its config digest, which does not involve the cache key."""
    from occlusion_distill.bench.results import config_digest

    rows = [json.loads(line) for line in (ROOT / "benchmarks/results/quick/results.jsonl").read_text().splitlines()]
    assert rows and all(config_digest(RunConfig.from_dict(r["config"])) == r["config_digest"] for r in rows)


# --- 3. the landmark flip ---------------------------------------------------------------------------

@pytest.mark.parametrize("width", [31, 32])
def test_flip_matches_albumentations_up_to_its_pixel_centre_convention(width):
    """Ours: continuous coordinates, pixel i spans [i, i + 1), x -> W - x. albumentations 2.0: keypoints at
    integer pixel centres, x -> W - 1 - x. The same point is x here and x - 0.5 there, so each flip is
    the other's, converted: ours(x) = alba(x - 0.5) + 0.5, and alba(x) = ours(x) - 1 on the same numbers."""
    rng = np.random.default_rng(width)
    image = rng.integers(0, 256, (24, width, 3), dtype=np.uint8)
    lm = np.column_stack([rng.uniform(0, width, 5), rng.uniform(0, 24, 5)]).astype(np.float32)
    ours_image, ours_lm = hflip(image, lm)
    flip = A.Compose([A.HorizontalFlip(p=1.0)], keypoint_params=A.KeypointParams(format="xy", remove_invisible=False))
    converted = flip(image=image, keypoints=lm - 0.5)
    assert np.array_equal(ours_image, converted["image"])
    swap = [1, 0, 2, 4, 3]  # ours also swaps left and right (MTCNN order); albumentations keeps the order
    assert np.allclose(ours_lm, (np.asarray(converted["keypoints"]) + 0.5)[swap], atol=1e-4)
    raw = np.asarray(flip(image=image, keypoints=lm)["keypoints"])
    assert np.allclose(raw[swap], ours_lm - [1.0, 0.0], atol=1e-4)


def test_flip_keeps_a_landmark_on_the_pixel_it_marks():
    image = np.zeros((9, 12, 1), np.uint8)
    image[4, 2] = 255
    lm = np.tile([[2.5, 4.5]], (5, 1)).astype(np.float32)  # the centre of pixel (row 4, column 2)
    flipped, moved = hflip(image, lm)
    row, col = np.argwhere(flipped[..., 0] == 255)[0]
    assert np.allclose(moved, [[col + 0.5, row + 0.5]] * 5)
