"""Three silent faults: the miner's seed is the run's, a NaN validation score never sticks as the best,
and an occlusion leaves a caller's mask alone unless ``fill_mask`` asks for the coverage."""

import copy
import math
from types import SimpleNamespace

import albumentations as A
import numpy as np
import pytest
import torch

from occlusion_distill.data.paired import PairedFaces, to_tensor
from occlusion_distill.data.synthfaces import generate
from occlusion_distill.distillers.base import Distiller
from occlusion_distill.distillers.mining import BankIndex, MemoryBank
from occlusion_distill.engine.checkpoint import StageCheckpoint
from occlusion_distill.engine.stage import EvalSet, StageContext
from occlusion_distill.engine.trainer import better_score, fit, predict
from occlusion_distill.errors import UsageError
from occlusion_distill.models.network import ModelOutput, build_model
from occlusion_distill.registry import create, registry


class _Stop(Exception):
    pass


# -- the miner's random stream follows the run's seed -------------------------------------------------------

def _mined_in_a_stage(seed, monkeypatch, miner="random"):
    """The negatives a triplet stage of run seed ``seed`` mines on the same fixed batches."""
    task = create("tasks", "expression")
    task.output_dim = 3
    dist = create("distillers", "triplet", task=task, miner=miner, bank_size=64)
    mined = []
    mine = dist.miner.mine
    dist.miner.mine = lambda *a: mined.append(mine(*a)) or mined[-1]

    def steps(self, ctx):  # the shared trainer's place: the same batches whatever the seed
        g = torch.Generator().manual_seed(0)
        for _ in range(6):
            s = ModelOutput(torch.randn(16, 3, generator=g), torch.randn(16, 8, generator=g))
            t = ModelOutput(torch.randn(16, 3, generator=g), torch.randn(16, 8, generator=g))
            self(s, torch.randint(0, 3, (16,), generator=g), t)
        return ctx.model

    monkeypatch.setattr(Distiller, "train_student", steps)
    ctx = SimpleNamespace(model=SimpleNamespace(embed_dim=8), teacher=SimpleNamespace(embed_dim=8),
                          device=torch.device("cpu"), seed=seed)
    dist.train_student(ctx)  # the route a run takes: the run's seed arrives in the StageContext
    assert dist.index.seed == seed  # the index draws its ivf training sample from the run's seed too
    return np.concatenate(mined[1:])  # the first step meets an empty bank


def test_random_miner_draws_from_the_runs_seed(monkeypatch):
    first, again, other = (_mined_in_a_stage(s, monkeypatch) for s in (0, 0, 1))
    assert (first >= 0).all()
    assert np.array_equal(first, again)  # the same seed mines the same negatives
    assert not np.array_equal(first, other)  # another seed mines others
    # hard mining has no random choice: the seed cannot change what it picks
    assert np.array_equal(_mined_in_a_stage(0, monkeypatch, "hard"), _mined_in_a_stage(1, monkeypatch, "hard"))


def test_ivf_lists_are_trained_on_a_sample_drawn_from_the_seed(monkeypatch):
    import faiss

    rng = np.random.default_rng(0)
    bank = MemoryBank(capacity=26_000, dim=4)  # large enough that k-means trains on a sample
    bank.add(rng.normal(size=(bank.capacity, 4)).astype(np.float32), rng.integers(0, 5, bank.capacity))
    samples = []

    class Recording(faiss.IndexIVFFlat):
        def train(self, x):  # the sample is what matters here; k-means on it would only cost time
            samples.append(np.array(x))
            raise _Stop

    monkeypatch.setattr(faiss, "IndexIVFFlat", Recording)
    for seed in (3, 3, 4):
        with pytest.raises(_Stop):
            BankIndex(bank, kind="ivf", seed=seed).update(np.arange(bank.size))
    assert len(samples[0]) < bank.size
    assert np.array_equal(samples[0], samples[1]) and not np.array_equal(samples[0], samples[2])


# -- a NaN validation score is never the best ----------------------------------------------------------------

def test_better_score_ranks_nan_and_inf_last():
    acc, mae = create("tasks", "expression"), create("tasks", "age")
    assert better_score(acc, 50.0, None) and better_score(acc, 50.0, math.nan) and better_score(mae, 9.0, math.inf)
    for task in (acc, mae):
        for bad in (math.nan, math.inf, -math.inf):
            assert not better_score(task, bad, None) and not better_score(task, bad, 50.0)
    assert better_score(acc, 60.0, 50.0) and not better_score(acc, 40.0, 50.0)
    assert better_score(mae, 4.0, 5.0) and not better_score(mae, 6.0, 5.0)


class _KilledAfterFirstEpoch(StageCheckpoint):
    """Saves the first epoch's checkpoint, then the process 'dies'."""

    def save(self, state):
        super().save(state)
        raise _Stop


@pytest.fixture(scope="module")
def small_stage():
    faces = generate(96, 32, seed=1)
    task = create("tasks", "expression").setup(faces)
    train = PairedFaces(faces, task.targets(faces), create("occlusions", "lower-half"), flip=True)
    val = EvalSet(to_tensor(faces.images[:48]), task.targets(faces)[:48])
    torch.manual_seed(0)
    model = build_model("simple-cnn", in_chans=3, image_size=32, output_dim=task.output_dim)
    return task, train, val, model


def _first_validation_nan(task):
    """The task, whose first validation score (only the first) is NaN, as from a model that blew up once."""
    task = copy.copy(task)
    calls = []
    honest = task.metrics

    def metrics(outputs, targets):
        calls.append(1)
        scores = honest(outputs, targets)
        return {**scores, task.metric: math.nan} if len(calls) == 1 else scores

    task.metrics = metrics
    return task, honest


def _ctx(small_stage, task, checkpoint=None):
    _, train, val, model = small_stage
    return StageContext("student", copy.deepcopy(model), task, train, val, "clean", 3, 32, 3e-3, 0.0,
                        torch.device("cpu"), 0, checkpoint=checkpoint)


def test_a_nan_first_validation_keeps_the_first_finite_epoch(small_stage):
    task, honest = _first_validation_nan(small_stage[0])
    ctx = _ctx(small_stage, task)
    model = fit(ctx, registry("distillers").create("finetune", task=task))  # no "no finite validation score"
    scores = [h["val_accuracy"] for h in ctx.history]
    assert math.isnan(scores[0]) and all(math.isfinite(s) for s in scores[1:])
    # the weights returned are the best finite epoch's
    assert honest(*_predict(model, small_stage))["accuracy"] == max(scores[1:])


def _predict(model, small_stage):
    val = small_stage[2]
    return predict(model, val.images, torch.device("cpu")), val.targets


@pytest.mark.parametrize("saved_best", ["as saved", "nan"])  # "nan": what a checkpoint held before the fix
def test_a_stage_resumed_after_a_nan_first_validation_keeps_a_finite_best(small_stage, tmp_path, saved_best):
    task, honest = _first_validation_nan(small_stage[0])
    path, key = tmp_path / "stage.pt", {"stage": "student"}
    with pytest.raises(_Stop):
        fit(_ctx(small_stage, task, _KilledAfterFirstEpoch(path, key)), create("distillers", "finetune", task=task))
    state = torch.load(path, weights_only=True)
    assert state["epoch"] == 1 and state["best_score"] is None  # a NaN epoch is no best
    if saved_best == "nan":
        state["best_score"] = math.nan
        torch.save(state, path)
    ctx = _ctx(small_stage, task, StageCheckpoint(path, key))
    model = fit(ctx, create("distillers", "finetune", task=task))
    scores = [h["val_accuracy"] for h in ctx.history]
    assert len(scores) == 3 and math.isnan(scores[0])
    assert honest(*_predict(model, small_stage))["accuracy"] == max(scores[1:])
    assert torch.load(path, weights_only=True)["best_score"] == max(scores[1:])


class _NaNAtStep2(Distiller):
    """The task loss, NaN at the second step."""

    uses_teacher = False

    def compute_loss(self, student, targets, teacher):
        self.calls = getattr(self, "calls", 0) + 1
        loss = self.task.loss(student.logits, targets)
        return {"loss": loss * math.nan if self.calls == 2 else loss}


@pytest.mark.parametrize("every_step", [True, False])  # False: as on a GPU, the flag is read at save points
def test_a_non_finite_loss_stops_the_stage_before_a_checkpoint_holds_its_weights(small_stage, tmp_path, every_step):
    from occlusion_distill.engine.trainer import StageTrainer, TrainingDiverged

    task = small_stage[0]
    path = tmp_path / "stage.pt"
    trainer = StageTrainer(_ctx(small_stage, task, StageCheckpoint(path, {"stage": "student"}, every=1)),
                           _NaNAtStep2(task))
    trainer.check_every_step = every_step
    with pytest.raises(TrainingDiverged, match="the loss became nan at epoch 1, step 2; the last checkpoint"):
        trainer.run()
    state = torch.load(path, weights_only=True)
    assert state["step"] == 1 and all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


@pytest.mark.parametrize("nan_scores", [1, 5])  # the first L2 strength's score only, or all five
def test_combined_keeps_a_finite_l2_strength_or_says_there_is_none(small_stage, nan_scores):
    from occlusion_distill.distillers.combined import L2_GRID
    from occlusion_distill.engine.trainer import TrainingDiverged

    member, faces = small_stage[3], generate(96, 32, seed=1)
    task = create("tasks", "age").setup(faces)  # age: the head is a closed-form ridge, fast
    train = PairedFaces(faces, task.targets(faces), create("occlusions", "lower-half"), flip=True)
    val = EvalSet(to_tensor(faces.images[:48]), task.targets(faces)[:48])
    calls = []
    honest = task.metrics
    task.metrics = lambda o, t: calls.append(1) or {**honest(o, t), **({task.metric: math.nan}
                                                                     if len(calls) <= nan_scores else {})}
    ctx = StageContext("student", copy.deepcopy(member), task, train, val, "occluded", 1, 32, 1e-3, 0.0,
                       torch.device("cpu"), 0, student_for=lambda name: copy.deepcopy(member))
    dist = create("distillers", "combined", task=task)
    if nan_scores == len(L2_GRID):
        with pytest.raises(TrainingDiverged, match="no finite validation score"):
            dist.train_student(ctx)
        return
    model = dist.train_student(ctx)
    scores = [h["val_mae"] for h in ctx.history]
    outputs = predict(model, val.images, torch.device("cpu"))
    assert math.isnan(scores[0]) and honest(outputs, val.targets)["mae"] == pytest.approx(min(scores[1:]))


# -- an occlusion leaves the caller's mask alone unless fill_mask is given -----------------------------------

OCCLUDERS = sorted(set(registry("occlusions").names()) - {"none"})


@pytest.fixture(scope="module")
def face():
    faces = generate(1, 112, seed=4)
    return faces.images[0], faces.landmarks[0]


def _compose(occ):
    return A.Compose([occ], keypoint_params=A.KeypointParams(format="xy", remove_invisible=False), seed=7)


@pytest.mark.parametrize("name", OCCLUDERS)
def test_a_segmentation_mask_passes_unchanged_by_default(name, face):
    image, landmarks = face
    segmentation = np.random.default_rng(0).integers(0, 4, image.shape[:2]).astype(np.uint8)
    out = _compose(create("occlusions", name))(image=image, keypoints=landmarks, mask=segmentation.copy(),
                                                masks=[segmentation.copy(), segmentation.copy()])
    assert (out["image"] != image).any()  # something was hidden, and the masks were left alone
    assert np.array_equal(out["mask"], segmentation)
    assert all(np.array_equal(m, segmentation) for m in out["masks"])


@pytest.mark.parametrize("name", OCCLUDERS)
def test_fill_mask_writes_its_value_at_the_hidden_pixels_only(name, face):
    image, landmarks = face
    occ = create("occlusions", name, fill_mask=255)
    assert occ.settings()["fill_mask"] == 255
    segmentation = np.random.default_rng(0).integers(0, 4, image.shape[:2]).astype(np.uint8)
    out = _compose(occ)(image=image, keypoints=landmarks, mask=segmentation.copy())
    # the same draw without albumentations: what was hidden
    hidden = _compose(create("occlusions", name, fill_mask=1))(image=image, keypoints=landmarks,
                                                               mask=np.zeros(image.shape[:2], np.uint8))["mask"] == 1
    assert hidden.any() and (out["mask"][hidden] == 255).all()
    assert np.array_equal(out["mask"][~hidden], segmentation[~hidden])
    # one value per channel of a multi-channel mask
    two = np.zeros((*image.shape[:2], 2), np.uint8)
    out = _compose(create("occlusions", name, fill_mask=(3, 5)))(image=image, keypoints=landmarks, mask=two)
    assert (out["mask"][hidden] == [3, 5]).all() and not out["mask"][~hidden].any()


@pytest.mark.parametrize("bad", ["yes", True, math.nan, [], [1, "x"]])
def test_a_bad_fill_mask_is_a_usage_error_naming_it(bad):
    with pytest.raises(UsageError, match="fill_mask"):
        registry("occlusions").build("lower-half", fill_mask=bad)
