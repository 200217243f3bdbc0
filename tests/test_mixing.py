"""Mixing the pair (``--mix``): one draw for both views and the targets, from (seed, epoch, batch) alone."""

from __future__ import annotations

import json

import pytest
import torch

from occlusion_distill.config import RunConfig, resolve_mix
from occlusion_distill.data.mixing import PairMix
from occlusion_distill.errors import UsageError


def _batch(n=8, size=12, classes=4):
    # face i is all i (clean) and all i/2 (occluded): which faces a pixel came from can be read back
    clean = torch.arange(n, dtype=torch.float32)[:, None, None, None].expand(n, 1, size, size).clone()
    return {"clean": clean, "occluded": clean / 2, "target": torch.arange(n) % classes,
            "index": torch.arange(n), "flipped": torch.zeros(n, dtype=torch.bool)}


@pytest.mark.parametrize("mode", ["mixup", "cutmix"])
def test_both_views_and_the_targets_share_one_draw(mode):
    batch = _batch()
    out = PairMix(mode, num_classes=4, seed=3)(batch, ("occluded", "clean"), epoch=1, index=5)
    # the same coefficient, partner and box in both views: the occluded view is still half the clean one
    assert torch.allclose(out["occluded"], out["clean"] / 2)
    lam, _ = PairMix(mode, num_classes=4, seed=3).draw(1, 5, 12, 12)
    assert 0.0 <= lam <= 1.0
    for i in range(8):
        partner = (i - 1) % 8
        pixels = out["clean"][i].flatten()
        if mode == "mixup":
            assert torch.allclose(pixels, torch.full_like(pixels, lam * i + (1 - lam) * partner))
            own = lam
        else:  # a pixel is the face's own or its partner's, and λ is the share left uncovered
            assert bool(((pixels == i) | (pixels == partner)).all())
            own = float((pixels == i).float().mean())
            assert own == pytest.approx(lam)
        target = out["target"][i]
        assert target.sum().item() == pytest.approx(1.0)
        assert target[i % 4].item() == pytest.approx(own) and target[partner % 4].item() == pytest.approx(1 - own)
    # untouched: what is not a view or the target, and the batch given
    assert out["index"] is batch["index"] and torch.equal(batch["clean"], _batch()["clean"])


def test_a_draw_is_fixed_by_seed_epoch_and_batch():
    mix = PairMix("cutmix", seed=0)
    assert mix.draw(2, 7, 48, 48) == PairMix("cutmix", seed=0).draw(2, 7, 48, 48)
    draws = {mix.draw(e, b, 48, 48) for e in range(3) for b in range(5)} | {PairMix("cutmix", seed=1).draw(0, 0, 48, 48)}
    assert len(draws) == 16


def test_soft_and_regression_targets_mix_linearly_and_one_face_is_left_alone():
    batch = _batch(4)
    lam, _ = PairMix("mixup", seed=0).draw(0, 0, 12, 12)
    soft = torch.softmax(torch.randn(4, 3), dim=1)
    out = PairMix("mixup", num_classes=3)({**batch, "target": soft}, ("occluded",), 0, 0)
    assert torch.allclose(out["target"], lam * soft + (1 - lam) * soft.roll(1, 0))
    ages = torch.tensor([20.0, 30.0, 40.0, 50.0])
    out = PairMix("mixup")({**batch, "target": ages}, ("occluded",), 0, 0)
    assert torch.allclose(out["target"], lam * ages + (1 - lam) * ages.roll(1, 0))
    assert torch.equal(out["clean"], batch["clean"])  # a view not named is not mixed
    one = {k: v[:1] for k, v in batch.items()}
    assert PairMix("mixup", num_classes=4)(one, ("occluded",), 0, 0) is one


def test_options_resolve_and_bad_ones_are_one_line():
    assert resolve_mix("mixup") == {"mode": "mixup", "alpha": 0.4}
    assert resolve_mix("cutmix=0.5") == {"mode": "cutmix", "alpha": 0.5}
    assert resolve_mix({"mode": "mixup", "alpha": 1}) == {"mode": "mixup", "alpha": 1.0}
    for off in (None, "none", "off", {}, False):
        assert resolve_mix(off) == {}
    for bad, message in [("mixupp", "mix must be mixup, cutmix or none"), ("mixup=x", "alpha must be a number"),
                         ("cutmix=0", "alpha must be in"), ({"mode": "mixup", "beta": 1}, "mix must be")]:
        with pytest.raises(UsageError, match=message) as err:
            resolve_mix(bad)
        assert "\n" not in str(err.value)
    cfg = RunConfig.from_options("smoke", mix="cutmix")
    assert cfg.teacher_outputs == "online" and RunConfig.from_dict(json.loads(cfg.to_json())) == cfg


def test_a_mixed_run_mixes_only_its_students_pairs_and_never_looks_up_teacher_outputs(tmp_path, monkeypatch):
    from occlusion_distill.engine import trainer
    from occlusion_distill.engine.cache import ModelCache
    from occlusion_distill.protocol.pipeline import ProtocolRun
    from occlusion_distill.protocol.reporting import NullReporter

    seen = []
    original = PairMix.__call__

    def spy(self, batch, views, epoch, index):
        seen.append(views)
        return original(self, batch, views, epoch, index)

    def no_table(*args, **kwargs):
        raise AssertionError("stored teacher outputs were looked up for mixed faces")

    monkeypatch.setattr(PairMix, "__call__", spy)
    monkeypatch.setattr(trainer, "TeacherTable", no_table)
    cfg = RunConfig.from_options("smoke", mix="mixup", distiller="kd", teacher_epochs=1, student_epochs=1,
                                 dataset_args={"n_train": 128, "n_val": 32, "n_test": 32})
    # as a library user may build it: outputs "cached" and mixing; the engine still runs the teacher online
    object.__setattr__(cfg, "teacher_outputs", "cached")
    run = ProtocolRun(cfg, NullReporter(), ModelCache(None))
    run.teacher_table = no_table
    run.teacher()
    assert seen == []  # the teacher learns its clean faces unmixed
    run.student()
    assert seen and set(seen) == {("occluded", "clean")}  # kd: the student's view and the teacher's
    seen.clear()
    run.baseline()
    assert seen and set(seen) == {("occluded",)}  # finetune: no teacher, its own view alone
