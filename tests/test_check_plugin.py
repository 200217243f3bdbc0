"""``check-plugin``: every built-in occlusion and distiller passes; deliberately broken ones fail, each for
its own reason, with a non-zero exit."""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import pytest
import torch

from occlusion_distill.checks import OCCLUSION_CHECKS, check_plugin
from occlusion_distill.distillers import Distiller, SoftTargetKD
from occlusion_distill.occlusions import LowerHalf, Occlusion
from occlusion_distill.registry import BUILTIN_ORIGIN, registry

from conftest import run_main
from test_registry import make_distribution

BUILTIN_OCCLUSIONS = [e.name for e in registry("occlusions").entries() if e.origin.startswith(BUILTIN_ORIGIN)]


def failed(report) -> dict[str, str]:
    return {r.check: r.detail for r in report.results if not r.passed}


# Speed targets belong to benchmarks, not tests: the built-ins run at 0.36-0.87x CoarseDropout
# (docs/occlusions-bench.json), and here the floor is below that (0.02x instead of the command's 0.05x),
# so a busy CI machine cannot fail them.
# The floor itself is tested with a plugin 100x too slow (``Slow`` below).
CI_MIN_SPEED = 0.02


@pytest.mark.parametrize("name", BUILTIN_OCCLUSIONS)
def test_builtin_occlusions_pass(name):
    report = check_plugin(name, "occlusions", min_speed=CI_MIN_SPEED)
    assert report.passed, failed(report)
    assert [r.check for r in report.results] == list(OCCLUSION_CHECKS)
    speed = report.results[-1].detail
    assert "images/s" in speed and "CoarseDropout" in speed


# -- deliberately broken occlusions: each breaks one point of the contract --------------------------

class MovesKeypoints(LowerHalf):
    """Broken: shifts the landmarks."""

    def apply_to_keypoints(self, keypoints, **params):
        out = np.array(keypoints, copy=True)
        out[:, 1] += 3.0
        return out


class IgnoresSeed(LowerHalf):
    """Broken: draws its randomness from numpy's global generator."""

    def sample(self, landmarks, shape):
        return {**super().sample(landmarks, shape), "shade": int(np.random.randint(0, 255))}

    def draw(self, image, shade=0, **params):
        out = image.copy()
        out[self.coverage(image.shape[:2], **params)] = shade
        return out


class PaintsInPlace(LowerHalf):
    """Broken: paints on the caller's image."""

    def draw(self, image, **params):
        image[self.coverage(image.shape[:2], **params)] = 0
        return image


class StraysOutside(LowerHalf):
    """Broken: its coverage mask misses a frame it paints around the image."""

    def draw(self, image, **params):
        out = super().draw(image, **params)
        out[0] = 255
        return out


class Slow(LowerHalf):
    """Broken: 20 ms per face."""

    def draw(self, image, **params):
        time.sleep(0.02)
        return super().draw(image, **params)


class StoresUnderAnotherName(LowerHalf):
    """Broken: keeps its option as ``_depth``, so settings() (and the run cache key) read None for it."""

    def __init__(self, depth: float = 0.5, p: float = 1.0):
        super().__init__(p=p)
        self._depth = depth

    def get_transform_init_args_names(self):
        return ("depth", "p")


class GreyOnly(LowerHalf):
    """Broken: returns a grey image whatever it gets."""

    def draw(self, image, **params):
        out = super().draw(image, **params)
        return out if out.ndim == 2 else out[..., 0]


class UnclippedAlpha(Occlusion):
    """Broken: renders a fixed 36 px square from the corner, its alpha not cut to the box on smaller images."""

    def render(self, shape, **params):
        box = (0, min(36, shape[0]), 0, min(36, shape[1]))
        return box, np.full((36, 36), 255, np.uint8), None


@pytest.mark.parametrize("cls, check, reason", [
    (MovesKeypoints, "keypoints unchanged in A.Compose", "keypoints moved by up to 3"),
    (IgnoresSeed, "same seed, same output", "self.random_generator"),
    (PaintsInPlace, "leaves its input unchanged", "modified in place"),
    (StraysOutside, "draws only inside its coverage mask", "outside the coverage mask"),
    (Slow, "speed against CoarseDropout", "below the 0.05x minimum"),
    (GreyOnly, "RGB 112 px: shape, dtype kept", "out uint8 (112, 112)"),
    (UnclippedAlpha, "RGB and grey 32 px: shape, dtype kept", "blendLinear"),
    (StoresUnderAnotherName, "settings record every option", "reads 'depth' as None"),
])
def test_broken_occlusion_fails_the_check_it_breaks(broken, cls, check, reason):
    report = check_plugin(broken("occlusions", f"broken-{cls.__name__.lower()}", cls), "occlusions",
                          min_speed=0.05 if cls is Slow else CI_MIN_SPEED)
    bad = failed(report)
    assert check in bad and reason in bad[check], bad
    # the others break more than one point by their nature
    if cls in (MovesKeypoints, IgnoresSeed, StraysOutside, Slow, StoresUnderAnotherName, UnclippedAlpha):
        assert set(bad) == {check}, bad


def test_occlusion_that_does_not_build_fails_every_check_with_the_reason(broken):
    def factory():
        raise ValueError("no such lens")

    report = check_plugin(broken("occlusions", "broken-build", factory), "occlusions")
    assert not report.passed
    assert "no such lens" in report.results[0].detail
    assert all(not r.passed for r in report.results)


# -- distillers ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["finetune", "kd", "triplet", "combined"])
def test_builtin_distillers_pass_on_a_class_and_a_regression_task(name):
    report = check_plugin(name, "distillers")
    assert report.passed, failed(report)
    assert {r.task for r in report.results} == {"expression", "age"}


class DetachedStudent(SoftTargetKD):
    """Broken: its loss never reaches the student's weights."""

    def __init__(self, task):
        super().__init__(task)
        self.scale = torch.nn.Parameter(torch.ones(()))

    def compute_loss(self, student, targets, teacher):
        loss = self.task.loss(student.logits.detach(), targets) * self.scale
        return {"loss": loss}


class TrainsTheTeacher(SoftTargetKD):
    """Broken: runs the teacher in training mode, so its batch-norm statistics move."""

    def compute_loss(self, student, targets, teacher):
        self._teacher.train()
        with torch.no_grad():
            self._teacher(torch.randn(4, 3, 40, 40))
        return super().compute_loss(student, targets, teacher)

    def train_student(self, ctx):
        self._teacher = ctx.teacher
        return super().train_student(ctx)


class ReturnsTheTeacher(SoftTargetKD):
    """Broken: trains, then hands back the teacher instead of the student."""

    def train_student(self, ctx):
        super().train_student(ctx)
        return ctx.teacher


class LeavesHooks(SoftTargetKD):
    """Broken: hooks the teacher and never removes the hook."""

    def train_student(self, ctx):
        ctx.teacher.register_forward_hook(lambda module, inputs, output: None)
        return super().train_student(ctx)


class LeavesTeacherTraining(SoftTargetKD):
    """Broken: switches the shared teacher to training mode after its stage."""

    def train_student(self, ctx):
        student = super().train_student(ctx)
        ctx.teacher.train()
        return student


class NaNLoss(Distiller):
    """Broken: a loss term that is NaN."""

    def compute_loss(self, student, targets, teacher):
        loss = self.task.loss(student.logits, targets)
        return {"loss": loss, "bad": torch.tensor(float("nan"))}


class NotJSON(SoftTargetKD):
    """Broken: settings that cannot go into config.json."""

    def hparams(self):
        return {"tau": object()}


@pytest.mark.parametrize("cls, check, reason", [
    (DetachedStudent, "gradients reach the student", "no parameter of the student"),
    (TrainsTheTeacher, "teacher untouched", "changed"),
    (NaNLoss, "loss terms finite", "'bad' is nan"),
    (NotJSON, "builds, settings are JSON", "must be JSON"),
    (ReturnsTheTeacher, "trains a few steps", "never trained"),
    (LeavesHooks, "teacher untouched", "hooks were left"),
    (LeavesTeacherTraining, "teacher untouched", "left in training mode"),
])
def test_broken_distiller_fails_the_check_it_breaks(broken, cls, check, reason):
    report = check_plugin(broken("distillers", f"broken-{cls.__name__.lower()}", cls), "distillers",
                          tasks=("expression",))
    bad = failed(report)
    assert check in bad and reason in bad[check], bad


class ClassesOnly(SoftTargetKD):
    """Declares classification only: checked on expression; building it for age must be refused."""

    task_kinds = ("classification",)


class ClaimsClassesOnly(SoftTargetKD):
    """Broken: declares classification only but its own ``__init__`` never lets the base class refuse age."""

    task_kinds = ("classification",)

    def __init__(self, task):
        torch.nn.Module.__init__(self)
        self.task, self.lambda_, self.tau = task, 0.5, 4.0


def test_a_distiller_is_checked_on_the_task_kinds_it_declares(broken):
    report = check_plugin(broken("distillers", "classes-only", ClassesOnly), "distillers")
    assert report.passed, failed(report)
    on_age = [r for r in report.results if r.task == "age"]
    assert [r.check for r in on_age] == ["refuses the task kinds it does not declare"]
    assert "UsageError: ClassesOnly supports classification tasks; 'age' is a regression task" in on_age[0].detail
    assert {r.task for r in report.results if r.check == "trains a few steps"} == {"expression"}
    bad = failed(check_plugin(broken("distillers", "claims-classes-only", ClaimsClassesOnly), "distillers"))
    assert "builds for 'age' without a UsageError" in bad["refuses the task kinds it does not declare"]


class AgesOnly(SoftTargetKD):
    """Declares regression only."""

    task_kinds = ("regression",)


def test_command_judges_a_distillers_options_on_a_task_it_declares(broken):
    """``--option`` is checked by building the distiller first: for a regression-only distiller that build
    must use age, not the first default task (expression), or good options read as a usage error."""
    from click.testing import CliRunner

    from occlusion_distill.cli import cli as command

    name = broken("distillers", "ages-only", AgesOnly)
    good = CliRunner().invoke(command, ["check-plugin", name, "--option", "lambda=0.3", "--quiet"])
    assert good.exit_code == 0, good.output
    bad = CliRunner().invoke(command, ["check-plugin", name, "--option", "lamda=0.3", "--quiet"])
    assert bad.exit_code != 0 and "did you mean 'lambda'" in str(bad.exception or bad.output)


def test_a_distiller_written_against_the_old_interface_still_passes(broken):
    """``forward`` overridden, the engine's ``fit`` imported, ``ctx.teacher_outputs`` switched and restored,
    its own hooks: as distillers were written before ``compute_loss``. One DeprecationWarning, at definition."""
    import torch.nn.functional as F

    with pytest.warns(DeprecationWarning, match="overrides Distiller.forward") as warned:
        class OldStyle(Distiller):
            def __init__(self, task, lambda_: float = 0.5):
                super().__init__(task)
                self.lambda_ = float(lambda_)
                self.seen = 0

            def hparams(self):
                return {"lambda": self.lambda_}

            def forward(self, student, targets, teacher=None):
                self.seen += 1
                task_loss = self.task.loss(student.logits, targets)
                match = F.mse_loss(student.logits, teacher.logits)
                return {"loss": task_loss + self.lambda_ * match, "task": task_loss.detach(), "match": match.detach()}

            def train_student(self, ctx):
                from occlusion_distill.engine.trainer import fit

                handle = ctx.teacher.register_forward_hook(lambda module, inputs, output: None)
                before, ctx.teacher_outputs = ctx.teacher_outputs, "online"
                try:
                    return fit(ctx, criterion=self)
                finally:
                    ctx.teacher_outputs = before
                    handle.remove()
    assert len(warned) == 1 and "\n" not in str(warned[0].message)
    report = check_plugin(broken("distillers", "old-style", OldStyle), "distillers")
    assert report.passed, failed(report)
    assert {r.task for r in report.results} == {"expression", "age"}


def test_default_hparams_record_every_option_and_the_version():
    class Plain(Distiller):
        version = 3

        def __init__(self, task, lambda_: float = 0.5, layers=("a", "b"), *, scale: int = 2):
            super().__init__(task)  # stores no option: the default hparams() must still see them all

        def compute_loss(self, student, targets, teacher):
            return {"loss": self.task.loss(student.logits, targets)}

    class Sub(Plain):
        def __init__(self, task, lambda_: float = 0.5, extra: str = "x"):
            super().__init__(task, lambda_, layers=("c",))

    task = registry("tasks").create("expression")
    assert Plain(task, 0.25).hparams() == {"lambda": 0.25, "layers": ["a", "b"], "scale": 2, "version": 3}
    assert Sub(task, lambda_=1.0).hparams() == {"lambda": 1.0, "extra": "x", "version": 3}  # the options it was built with
    assert json.dumps(Plain(task).hparams())


# -- the command --------------------------------------------------------------------------------------

BROKEN_PLUGIN = '''
import numpy as np
from occlusion_distill.occlusions import LowerHalf, Occlusion

class MovesKeypoints(LowerHalf):
    """Hides the lower half and, wrongly, moves the landmarks."""
    def apply_to_keypoints(self, keypoints, **params):
        out = np.array(keypoints, copy=True)
        out[:, 0] += 2.0
        return out
'''


def test_command_passes_builtins_and_exits_1_naming_a_broken_installed_plugin(tmp_path, cli):
    make_distribution(tmp_path, "occdistill-wonky", "occd_wonky_plugin", BROKEN_PLUGIN,
                      {"occlusion_distill.occlusions": {"wonky": "occd_wonky_plugin:MovesKeypoints"}})
    env = {"PYTHONPATH": str(tmp_path) + ":" + ":".join(sys.path), "COLUMNS": "200"}
    ok = cli("check-plugin", "upper-half", "--quiet", "--min-speed", CI_MIN_SPEED, env=env)
    assert ok.returncode == 0, ok.stderr
    assert "upper-half" in ok.stdout and "passed" in ok.stdout and "FAIL" not in ok.stdout

    res = cli("check-plugin", "wonky", "--quiet", "--min-speed", CI_MIN_SPEED, "--json", tmp_path / "checks.json",
              env=env)
    assert res.returncode == 1, res.stderr
    assert "occdistill-wonky==1.2.3" in res.stdout and "FAILED" in res.stdout
    assert "keypoints moved by up to 2" in res.stdout
    assert "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1] == "occdistill: error: 1 of 1 plugin(s) failed the contract: wonky"
    saved = json.loads((tmp_path / "checks.json").read_text())["plugins"][0]
    assert saved["name"] == "wonky" and saved["passed"] is False
    assert [r["check"] for r in saved["results"] if not r["passed"]] == ["keypoints unchanged in A.Compose"]


def test_all_checks_every_registered_occlusion(cli, tmp_path):
    res = cli("check-plugin", "--all", "--kind", "occlusions", "--quiet", "--min-speed", CI_MIN_SPEED,
              "--json", tmp_path / "all.json")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr
    checked = {p["name"] for p in json.loads((tmp_path / "all.json").read_text())["plugins"]}
    assert checked == set(registry("occlusions").names())  # built-in and installed ones alike


def test_command_rejects_bad_input_in_one_line():
    for args, message in ((["nosuch"], "no occlusion or distiller is named 'nosuch'"),
                          ([], "name the plugins to check, or pass --all"),
                          (["age"], "'age' is a task: check-plugin checks occlusions and distillers"),
                          (["mask", "--option", "colours=purple"], "unknown colour 'purple'"),
                          (["kd", "mask", "--option", "tau=2"], "--option applies to one named plugin"),
                          (["kd", "--option", "lamda=0.2"], "did you mean 'lambda'? (its options: lambda, tau)"),
                          (["mask", "--option", "colors=white"], "did you mean 'colours'?")):
        res = run_main("check-plugin", *args, "--quiet")
        lines = res.stderr.strip().splitlines()
        assert res.returncode != 0 and len(lines) == 1 and message in lines[0], res.stderr
