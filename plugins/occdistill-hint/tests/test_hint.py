"""The hint distiller alone, through occlusion-distill's contract checks, and in a whole run."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from click.testing import CliRunner

from occlusion_distill.checks import check_plugin
from occlusion_distill.cli import cli
from occlusion_distill.errors import UsageError
from occlusion_distill.models.network import build_model
from occlusion_distill.registry import registry
from occdistill_hint import HintDistiller, feature_maps, middle_layer

torch.set_num_threads(1)


def small_model(output_dim: int = 7):
    torch.manual_seed(0)
    return build_model("simple-cnn", in_chans=3, image_size=40, output_dim=output_dim)


def test_registered_through_its_entry_point():
    entry = registry("distillers").get("hint")
    assert entry.obj is HintDistiller
    assert entry.origin.startswith("occdistill-hint==")


def test_middle_layer_is_the_end_of_the_middle_resolution():
    model = small_model()
    example = torch.zeros(2, 3, 40, 40)
    name = middle_layer(model.backbone, example)
    maps = dict(feature_maps(model.backbone, example))
    # simple-cnn at 40 px runs at 40, 20, 10, 5 and 2 px: the middle one is 10 px, block 3's last ReLU
    assert maps[name][-2:] == (10, 10)
    assert isinstance(dict(model.backbone.named_modules())[name], torch.nn.ReLU)
    later = [n for n, s in feature_maps(model.backbone, example) if s[-2:] == (10, 10)]
    assert later[-1] == name


def _pair():
    task = registry("tasks").create("expression")
    task.output_dim = 7
    teacher = small_model().requires_grad_(False)
    student = copy.deepcopy(teacher).requires_grad_(True).train()
    return task, teacher, student


def test_hint_is_zero_when_the_student_sees_what_the_teacher_sees():
    task, teacher, student = _pair()
    teacher.train()  # batch statistics on both sides: identical feature maps for identical input
    hint = HintDistiller(task)
    x = torch.randn(4, 3, 40, 40)
    hint.attach(student, teacher, x[:2])
    channels = hint.regressor.weight.shape[0]
    with torch.no_grad():
        hint.regressor.weight.copy_(torch.eye(channels).reshape(channels, channels, 1, 1))
        t_out = teacher(x)
    terms = hint(student(x), torch.zeros(4, dtype=torch.long), t_out)
    assert float(terms["hint"]) < 1e-10
    with torch.no_grad():
        t_out = teacher(x)
    terms = hint(student(x.flip(-1)), torch.zeros(4, dtype=torch.long), t_out)  # another view: a real hint
    assert float(terms["hint"]) > 1e-3
    hint.detach()


def test_gradients_reach_the_student_and_regressor_not_the_teacher():
    task, teacher, student = _pair()
    teacher.eval()
    hint = HintDistiller(task, lambda_=2.0)
    x = torch.randn(4, 3, 40, 40)
    hint.attach(student, teacher, x[:2])
    out = student(x)
    with torch.no_grad():
        t_out = teacher(x)
    terms = hint(out, torch.zeros(4, dtype=torch.long), t_out)
    assert set(terms) == {"loss", "task", "hint"}
    assert torch.allclose(terms["loss"], terms["task"] + 2.0 * terms["hint"])
    terms["loss"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in student.parameters())
    assert hint.regressor.weight.grad is not None and hint.regressor.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())
    hint.detach()
    student.train()
    student(x)
    assert not hint._features  # detached: no hook keeps feature maps any more


def test_without_hooks_the_loss_says_how_to_use_it():
    task = registry("tasks").create("expression")
    task.output_dim = 7
    model = small_model()
    with pytest.raises(RuntimeError, match="train_student"):
        HintDistiller(task)(model(torch.zeros(2, 3, 40, 40)), torch.zeros(2, dtype=torch.long))


def test_bad_options_and_unknown_layer_are_one_line_errors():
    task = registry("tasks").create("expression")
    for bad in (-1, float("nan"), True, "x"):
        with pytest.raises(UsageError, match="lambda"):
            HintDistiller(task, lambda_=bad)
    model = small_model()
    with pytest.raises(UsageError, match="no layer 'nope'"):
        HintDistiller(task, layer="nope").attach(model, copy.deepcopy(model), torch.zeros(2, 3, 40, 40))


def test_passes_the_distiller_contract_checks():
    report = check_plugin("hint", "distillers")
    assert report.passed, [r for r in report.results if not r.passed]
    assert {r.task for r in report.results} == {"expression", "age"}


def test_a_whole_run_with_the_hint_distiller(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["run", "--distiller", "hint", "--preset", "smoke", "--quiet", "--out", str(out),
                                      "--cache-dir", str(tmp_path / "cache"), "--distiller-arg", "lambda=0.5"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["distiller"] == "hint"
    assert metrics["origins"]["distiller"].startswith("occdistill-hint==")
    assert (out / "checkpoints" / "student.pt").is_file()
    config = json.loads((out / "config.json").read_text())
    assert json.dumps(config).count('"layer": "auto"') >= 1
