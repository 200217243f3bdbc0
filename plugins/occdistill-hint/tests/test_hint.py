"""The hint distiller alone, through occlusion-distill's contract checks, and in a whole run."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import occdistill_hint
from occlusion_distill.checks import check_plugin
from occlusion_distill.cli import cli
from occlusion_distill.engine.features import FeatureTap
from occlusion_distill.errors import RunFailed, UsageError
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


def _outputs(hint, student, teacher, x_student, x_teacher):
    """One step's outputs as the trainer hands them to the loss: the declared layer's maps in ``features``."""
    with FeatureTap(hint.feature_layers, student, teacher) as tap:
        with torch.no_grad():
            t_out = teacher(x_teacher)
        t_out = t_out._replace(features=tap.take("teacher"))
        s_out = student(x_student)
        return s_out._replace(features=tap.take("student")), t_out


def test_hint_is_zero_when_the_student_sees_what_the_teacher_sees():
    task, teacher, student = _pair()
    teacher.train()  # batch statistics on both sides: identical feature maps for identical input
    hint = HintDistiller(task)
    x = torch.randn(4, 3, 40, 40)
    hint.setup(student, teacher, x[:2])
    assert hint.feature_layers == (middle_layer(student.backbone, x[:2]),)
    channels = hint.regressor.weight.shape[0]
    with torch.no_grad():
        hint.regressor.weight.copy_(torch.eye(channels).reshape(channels, channels, 1, 1))
    s_out, t_out = _outputs(hint, student, teacher, x, x)
    assert float(hint(s_out, torch.zeros(4, dtype=torch.long), t_out)["hint"]) < 1e-10
    s_out, t_out = _outputs(hint, student, teacher, x.flip(-1), x)  # another view: a real hint
    assert float(hint(s_out, torch.zeros(4, dtype=torch.long), t_out)["hint"]) > 1e-3


def test_gradients_reach_the_student_and_regressor_not_the_teacher():
    task, teacher, student = _pair()
    teacher.eval()
    hint = HintDistiller(task, lambda_=2.0)
    x = torch.randn(4, 3, 40, 40)
    hint.setup(student, teacher, x[:2])
    s_out, t_out = _outputs(hint, student, teacher, x, x)
    terms = hint(s_out, torch.zeros(4, dtype=torch.long), t_out)
    assert set(terms) == {"loss", "task", "hint"}
    assert torch.allclose(terms["loss"], terms["task"] + 2.0 * terms["hint"])
    assert not terms["hint"].requires_grad and terms["loss"].requires_grad  # logged terms come back detached
    terms["loss"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in student.parameters())
    assert hint.regressor.weight.grad is not None and hint.regressor.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())
    assert not any(m._forward_hooks for m in (*student.modules(), *teacher.modules()))  # the tap removed its hooks


def test_the_plugin_registers_no_hook_and_knows_no_engine():
    source = (Path(occdistill_hint.__file__)).read_text()
    assert "occlusion_distill.engine" not in source and "register_forward_hook" not in source
    assert "train_student" not in HintDistiller.__dict__ and "StageContext" not in source  # the stage is the engine's


def test_without_feature_maps_the_loss_says_how_to_use_it():
    task = registry("tasks").create("expression")
    task.output_dim = 7
    model = small_model()
    with pytest.raises(RunFailed, match="ctx.fit"):
        HintDistiller(task)(model(torch.zeros(2, 3, 40, 40)), torch.zeros(2, dtype=torch.long),
                            model(torch.zeros(2, 3, 40, 40)))
    with pytest.raises(RunFailed, match="needs the teacher"):
        HintDistiller(task)(model(torch.zeros(2, 3, 40, 40)), torch.zeros(2, dtype=torch.long))


def test_bad_options_and_unknown_layer_are_one_line_errors():
    task = registry("tasks").create("expression")
    for bad in (-1, float("nan"), True, "x"):
        with pytest.raises(UsageError, match="lambda"):
            HintDistiller(task, lambda_=bad)
    model = small_model()
    with pytest.raises(UsageError, match="no layer 'nope'"):
        HintDistiller(task, layer="nope").setup(model, copy.deepcopy(model), torch.zeros(2, 3, 40, 40))


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
