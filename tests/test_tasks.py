import math

import numpy as np
import pytest
import torch

from occlusion_distill.data.faceset import FaceSet
from occlusion_distill.errors import DataError
from occlusion_distill.registry import create
from occlusion_distill.tasks import Age, Expression, Gender, macro_f1


def _faces(labels, classes=None, n=None):
    n = n or len(next(iter(labels.values())))
    return FaceSet(np.zeros((n, 32, 32, 1), np.uint8), np.zeros((n, 5, 2), np.float32),
                   {k: np.asarray(v) for k, v in labels.items()}, classes or {}, name="toy")


def test_expression_loss_metrics_by_hand():
    task = create("tasks", "expression").setup(_faces({"expression": [0, 1, 2, 2]},
                                                      {"expression": ["a", "b", "c"]}))
    assert task.output_dim == 3 and task.higher_is_better and task.metric == "accuracy"
    logits = np.array([[5.0, 0, 0], [0, 5.0, 0], [5.0, 0, 0], [0, 0, 5.0]])
    targets = np.array([0, 1, 2, 2])
    m = task.metrics(logits, targets)
    assert m["accuracy"] == pytest.approx(75.0)
    # class 0: tp1 fp1 fn0 -> 2/3; class 1: 1; class 2: tp1 fp0 fn1 -> 2/3
    assert m["macro_f1"] == pytest.approx(100 * (2 / 3 + 1 + 2 / 3) / 3)
    loss = task.loss(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([2]))
    assert loss.item() == pytest.approx(-math.log(math.exp(3) / (math.exp(1) + math.exp(2) + math.exp(3))))


def test_gender_accuracy_and_class_count_from_data():
    task = Gender().setup(_faces({"gender": [0, 1, 1]}, {"gender": ["male", "female"]}))
    assert task.output_dim == 2 and task.class_names == ["male", "female"]
    assert task.metrics(np.array([[1.0, 0], [0, 1.0], [1.0, 0]]), np.array([0, 1, 1]))["accuracy"] == \
        pytest.approx(200 / 3)


def test_age_standardises_and_reports_mae_in_years():
    task = Age().setup(_faces({"age": np.array([10.0, 30.0, 50.0], np.float32)}))
    assert task.mean == pytest.approx(30.0) and task.std == pytest.approx(np.std([10, 30, 50]))
    assert not task.higher_is_better and task.metric == "mae"
    outputs = (np.array([[20.0], [30.0], [60.0]]) - task.mean) / task.std  # predictions 20, 30, 60
    m = task.metrics(outputs, np.array([10.0, 30.0, 50.0]))
    assert m["mae"] == pytest.approx((10 + 0 + 10) / 3)
    assert m["rmse"] == pytest.approx(math.sqrt((100 + 0 + 100) / 3))
    # Huber with its threshold in years (beta = delta / std in standardised units)
    beta = task.delta / task.std
    near = torch.tensor([[1.0 / task.std]])  # 1 year off: 0.5 d^2 / beta
    assert task.loss(near, torch.tensor([30.0])).item() == pytest.approx(0.5 * (1 / task.std) ** 2 / beta)
    far = torch.tensor([[5.0]])  # |d| >= beta -> |d| - 0.5 beta
    assert task.loss(far, torch.tensor([30.0])).item() == pytest.approx(5.0 - 0.5 * beta)


def test_macro_f1_skips_absent_classes():
    assert macro_f1(np.array([0, 0]), np.array([0, 0]), 5) == pytest.approx(100.0)


def test_task_needs_its_labels():
    with pytest.raises(DataError, match="needs 'age' labels"):
        Age().setup(_faces({"expression": [0, 1]}))


def test_labels_out_of_range_are_rejected():
    with pytest.raises(DataError, match="must lie in 0..1"):
        Gender().setup(_faces({"gender": [0, 3]}, {"gender": ["m", "f"]}))


def test_expression_class_count_mismatch():
    with pytest.raises(DataError, match="asked for 8 classes"):
        Expression(num_classes=8).setup(_faces({"expression": [0, 1]}, {"expression": list("abcdefg")}))


def test_a_third_party_regression_task_keeps_the_huber_threshold_of_one_standard_deviation():
    import torch
    import torch.nn.functional as F

    from occlusion_distill.tasks.base import RegressionTask

    class Height(RegressionTask):
        label = "height"

    task = Height()
    task.mean, task.std = 170.0, 10.0
    outputs, targets = torch.tensor([[0.0], [3.0]]), torch.tensor([170.0, 175.0])
    assert torch.isclose(task.loss(outputs, targets), F.smooth_l1_loss(outputs.reshape(-1), (targets - 170) / 10))
