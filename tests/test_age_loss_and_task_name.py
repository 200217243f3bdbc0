"""The age loss is chosen in years and is part of the cache keys; a task that sets no name is still named."""

import dataclasses

import numpy as np
import pytest
import torch

from occlusion_distill.config import RunConfig
from occlusion_distill.data.faceset import FaceSet
from occlusion_distill.errors import DataError, UsageError
from occlusion_distill.registry import registry, tasks
from occlusion_distill.tasks import Age
from occlusion_distill.tasks.base import RegressionTask
from occlusion_distill.tasks.age import AGE_HUBER_YEARS

AGES = np.array([10.0, 30.0, 50.0], np.float32)  # standard deviation 16.3 years


def _faces(labels):
    n = len(next(iter(labels.values())))
    return FaceSet(np.zeros((n, 32, 32, 1), np.uint8), np.zeros((n, 5, 2), np.float32),
                   {k: np.asarray(v) for k, v in labels.items()}, {}, name="toy")


def _grad(task, error_years: float) -> float:
    """d loss / d output (standardised units) for one face predicted ``error_years`` too old."""
    out = torch.tensor([[(30.0 + error_years - task.mean) / task.std]], requires_grad=True)
    task.loss(out, torch.tensor([30.0])).backward()
    return float(out.grad)


# -- the age loss ---------------------------------------------------------------------------------

def test_age_loss_is_linear_beyond_a_few_years_not_quadratic_up_to_a_standard_deviation():
    task = Age().setup(_faces({"age": AGES}))
    assert 1 <= AGE_HUBER_YEARS <= 10  # "a few years", far below one standard deviation
    # 8 and 16 years off are both within one standard deviation (16.3): the old loss pulled twice as hard
    # on the second, as MSE does; an error of several years counts linearly now, as the MAE it is scored by
    assert _grad(task, 8.0) == pytest.approx(_grad(task, 16.0)) == pytest.approx(1.0)
    assert _grad(task, -12.0) == pytest.approx(-1.0)
    # within the threshold it is quadratic: the slope grows with the error, in years through the scale
    half = AGE_HUBER_YEARS / 2
    assert _grad(task, half) == pytest.approx(half / AGE_HUBER_YEARS)


def test_age_huber_value_in_years():
    task = Age(delta=4.0).setup(_faces({"age": AGES}))
    s = task.std
    out = lambda years: torch.tensor([[(years - task.mean) / s]])  # noqa: E731
    target = torch.tensor([30.0])
    assert task.loss(out(32.0), target).item() == pytest.approx(0.5 * (2 / s) ** 2 / (4 / s))
    assert task.loss(out(40.0), target).item() == pytest.approx(10 / s - 0.5 * 4 / s)


@pytest.mark.parametrize("loss, expected", [("l1", lambda e: abs(e)), ("mse", lambda e: e * e)])
def test_age_l1_and_mse_options(loss, expected):
    task = Age(loss=loss).setup(_faces({"age": AGES}))
    errors = np.array([-20.0, 3.0])
    out = torch.tensor((30.0 + errors - task.mean) / task.std, dtype=torch.float32).reshape(-1, 1)
    want = np.mean([expected(e / task.std) for e in errors])
    assert task.loss(out, torch.tensor([30.0, 30.0])).item() == pytest.approx(want, rel=1e-5)
    assert task.settings() == {"loss": loss}


def test_age_loss_options_are_checked_in_one_line():
    with pytest.raises(UsageError, match="task 'age': loss must be one of huber, l1, mse, not 'l2'"):
        registry("tasks").build("age", loss="l2")
    for bad in (0, -1.0, float("nan"), "5", True):
        with pytest.raises(UsageError, match="delta must be a positive number"):
            Age(delta=bad)
    with pytest.raises(UsageError, match="does not accept these options.*loss, delta"):
        registry("tasks").build("age", huber=3)


def test_the_age_loss_is_in_the_cache_keys():
    from occlusion_distill.protocol.pipeline import _student_key, _teacher_key, build_parts, resolved_settings

    cfg = RunConfig.from_options("smoke", task="age")
    parts = build_parts(cfg)

    def keys(task):
        settings = resolved_settings(cfg, dataclasses.replace(parts, task=task))
        t = _teacher_key(cfg, settings)
        return settings, t, _student_key(cfg, settings, t, "finetune", {}, parts.origins["distiller"])

    default, t0, s0 = keys(Age())
    assert default["task"] == {"loss": "huber", "delta": AGE_HUBER_YEARS}
    assert keys(Age()) == (default, t0, s0)
    for other in (Age(loss="l1"), Age(delta=AGE_HUBER_YEARS + 1), Age(loss="mse")):
        _, t, s = keys(other)
        assert t != t0 and s != s0, other.settings()


# -- Task.name for a task that sets none ----------------------------------------------------------

class Wrinkles(RegressionTask):
    """A third party's task as a newcomer writes it: a label, no name."""

    label = "wrinkles"


def test_unregistered_task_without_a_name_uses_its_class_name():
    assert Wrinkles().name == "wrinkles" and Wrinkles.name == "wrinkles"
    with pytest.raises(DataError) as info:
        Wrinkles().setup(_faces({"age": AGES}))
    assert str(info.value) == "task 'wrinkles' needs 'wrinkles' labels, but data set 'toy' has only: age"


def test_registered_task_without_a_name_uses_its_registered_name():
    tasks.add("skin-wrinkles", Wrinkles, origin="occdistill-wrinkles==0.1")
    try:
        task, _ = registry("tasks").build("skin-wrinkles")
        assert task.name == "skin-wrinkles"
        with pytest.raises(DataError, match="^task 'skin-wrinkles' needs 'wrinkles' labels, but data set 'toy'"):
            task.setup(_faces({"age": AGES}))
        with pytest.raises(UsageError, match="^task 'skin-wrinkles': loss must be one of"):
            registry("tasks").build("skin-wrinkles", loss="l2")
    finally:
        tasks.unregister("skin-wrinkles")


def test_bare_decorator_registers_a_nameless_task_under_a_string():
    class Freckles(RegressionTask):
        label = "freckles"

    tasks.register(Freckles)
    try:
        assert "freckles" in registry("tasks").names()
        assert registry("tasks").create("freckles").name == "freckles"
    finally:
        tasks.unregister("freckles")
