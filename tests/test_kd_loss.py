import math

import torch

from occlusion_distill.distillers import Finetune, SoftTargetKD, kd_kl
from occlusion_distill.models.network import ModelOutput
from occlusion_distill.tasks import Age, Expression


def _softmax(v):
    e = [math.exp(x) for x in v]
    return [x / sum(e) for x in e]


def _out(logits):
    t = torch.tensor(logits, dtype=torch.float64)
    return ModelOutput(t, torch.zeros(len(logits), 4, dtype=torch.float64))


def test_kd_kl_matches_hand_computation():
    s, t, tau = [1.0, 2.0, 0.5], [0.2, 3.0, -1.0], 2.0
    ps, pt = _softmax([x / tau for x in s]), _softmax([x / tau for x in t])
    by_hand = tau * tau * sum(q * math.log(q / p) for p, q in zip(ps, pt))
    got = kd_kl(torch.tensor([s], dtype=torch.float64), torch.tensor([t], dtype=torch.float64), tau)
    assert math.isclose(got.item(), by_hand, rel_tol=1e-9)
    assert got.item() > 0


def test_kd_kl_is_zero_when_student_equals_teacher_and_averages_over_batch():
    a = torch.tensor([[1.0, -2.0, 0.3], [0.0, 0.0, 5.0]])
    assert kd_kl(a, a, 4.0).abs().item() < 1e-6
    b = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 5.0]])
    row0 = kd_kl(a[:1], b[:1], 4.0).item()
    assert math.isclose(kd_kl(a, b, 4.0).item(), row0 / 2, rel_tol=1e-5)


def test_kd_total_loss_by_hand():
    task = Expression(num_classes=3)
    task.output_dim = 3
    s, t, y, lam, tau = [[1.0, 2.0, 0.5]], [[0.2, 3.0, -1.0]], 2, 0.3, 3.0
    ce = -math.log(_softmax(s[0])[y])
    ps, pt = _softmax([x / tau for x in s[0]]), _softmax([x / tau for x in t[0]])
    kl = tau * tau * sum(q * math.log(q / p) for p, q in zip(ps, pt))
    kd = SoftTargetKD(task, lambda_=lam, tau=tau)
    terms = kd(_out(s), torch.tensor([y]), _out(t))
    assert math.isclose(terms["loss"].item(), (1 - lam) * ce + lam * kl, rel_tol=1e-9)
    assert math.isclose(terms["task"].item(), ce, rel_tol=1e-9)
    assert math.isclose(terms["distill"].item(), kl, rel_tol=1e-9)


def test_kd_regression_form_is_distance_to_teacher():
    task = Age(delta=10.0)  # a threshold of one std: 1 in standardised units
    task.mean, task.std = 30.0, 10.0
    s, t, y = [[0.5], [-1.0]], [[1.0], [0.0]], [40.0, 20.0]  # targets standardise to 1.0 and -1.0
    kd = SoftTargetKD(task, lambda_=0.25)
    terms = kd(_out(s), torch.tensor(y, dtype=torch.float64), _out(t))
    huber = ((0.5 * 0.5 ** 2) + 0.0) / 2  # |0.5-1| = 0.5 < 1 -> 0.5*d^2; |-1-(-1)| = 0
    distance = (0.5 + 1.0) / 2
    assert math.isclose(terms["task"].item(), huber, rel_tol=1e-6)
    assert math.isclose(terms["distill"].item(), distance, rel_tol=1e-6)
    assert math.isclose(terms["loss"].item(), 0.75 * huber + 0.25 * distance, rel_tol=1e-6)


def test_finetune_is_the_task_loss_alone():
    task = Expression(num_classes=3)
    task.output_dim = 3
    s = [[1.0, 2.0, 0.5]]
    assert not Finetune.uses_teacher
    loss = Finetune(task)(_out(s), torch.tensor([0]), None)["loss"]
    assert math.isclose(loss.item(), -math.log(_softmax(s[0])[0]), rel_tol=1e-9)


def test_kd_rejects_bad_hyperparameters():
    import pytest

    from occlusion_distill.errors import UsageError

    task = Expression(num_classes=3)
    with pytest.raises(UsageError, match="lambda"):
        SoftTargetKD(task, lambda_=1.5)
    with pytest.raises(UsageError, match="tau"):
        SoftTargetKD(task, tau=0)


# -- the Distiller template: forward checks what compute_loss is given and gives back ----------------------

def test_forward_needs_the_teacher_when_the_distiller_uses_it():
    import pytest

    from occlusion_distill.errors import RunFailed

    task = Expression()
    task.output_dim = 3
    s = _out([[1.0, 0.0, -1.0]])
    with pytest.raises(RunFailed, match="SoftTargetKD needs the teacher's outputs"):
        SoftTargetKD(task)(s, torch.tensor([0]))
    assert set(Finetune(task)(s, torch.tensor([0]))) == {"loss", "task"}  # uses_teacher False: None is right


def test_forward_checks_the_terms_and_detaches_all_but_the_loss():
    import pytest

    from occlusion_distill.distillers import Distiller
    from occlusion_distill.errors import PluginError

    class Returns(Distiller):
        uses_teacher = False

        def __init__(self, task, what="ok"):
            super().__init__(task)
            self.what = what

        def compute_loss(self, student, targets, teacher):
            loss = student.logits.sum()
            return {"ok": {"loss": loss, "half": loss / 2}, "no loss": {"task": loss},
                    "vector": {"loss": student.logits.sum(1)}, "float": {"loss": loss, "x": 1.0},
                    "tuple": (loss,)}[self.what]

    task = Expression()
    s = ModelOutput(torch.ones(2, 3, requires_grad=True), torch.zeros(2, 4))
    terms = Returns(task)(s, torch.tensor([0, 1]))
    assert terms["loss"].requires_grad and not terms["half"].requires_grad and float(terms["half"]) == 3.0
    for what, message in (("no loss", "a tensor under 'loss'"), ("tuple", "got tuple"),
                          ("vector", r"'loss' must be a scalar tensor, got shape \(2,\)"),
                          ("float", "term 'x' must be a one-element tensor, got float")):
        with pytest.raises(PluginError, match=message):
            Returns(task, what)(s, torch.tensor([0, 1]))


def test_only_finetune_is_the_baseline_and_task_kinds_are_declared():
    import pytest

    from occlusion_distill.errors import UsageError
    from occlusion_distill.registry import registry

    task = Expression()
    built = {n: registry("distillers").create(n, task=task) for n in ("finetune", "kd", "triplet", "combined")}
    assert [n for n, d in built.items() if d.is_baseline] == ["finetune"]
    assert all(d.task_kinds == ("classification", "regression") for d in built.values())

    class ClassesOnly(SoftTargetKD):
        task_kinds = ("classification",)

    with pytest.raises(UsageError, match="ClassesOnly supports classification tasks; 'age' is a regression task"):
        ClassesOnly(Age())
    from occlusion_distill.errors import PluginError

    with pytest.raises(PluginError, match="task_kinds must name some of classification, regression"):
        type("Bad", (SoftTargetKD,), {"task_kinds": ("segmentation",)})
