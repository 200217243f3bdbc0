"""Triplet distillation: the loss, the memory bank, FAISS search, the miners, and the combined student."""

import numpy as np
import pytest
import torch

from occlusion_distill.distillers.mining import BankIndex, MemoryBank, exact_search, valid_negatives
from occlusion_distill.distillers.triplet import TripletKD, triplet_loss
from occlusion_distill.errors import PluginError, UsageError
from occlusion_distill.registry import registry


def test_triplet_loss_matches_a_hand_computation():
    a = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    p = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 0.0]])  # distances 5, 0, 2
    n = torch.tensor([[0.0, 1.0], [1.0, 3.0], [0.0, 2.5]])  # distances 1, 3, 0.5
    # max(0, 5 - 1 + 0.5) = 4.5; max(0, 0 - 3 + 0.5) = 0; max(0, 2 - 0.5 + 0.5) = 2
    assert triplet_loss(a, p, n, 0.5).item() == pytest.approx((4.5 + 0 + 2) / 3)
    valid = torch.tensor([True, False, True])
    assert triplet_loss(a, p, n, 0.5, valid).item() == pytest.approx((4.5 + 2) / 2)
    assert triplet_loss(a, p, n, 0.5, torch.zeros(3, dtype=torch.bool)).item() == 0.0
    a.requires_grad_(True)
    triplet_loss(a, p, n, 0.5).backward()
    assert a.grad[1].abs().sum() == 0 and a.grad[0].abs().sum() > 0  # inactive triplets give no gradient


def test_bank_is_a_ring_buffer():
    bank = MemoryBank(capacity=5, dim=2)
    bank.add(np.ones((3, 2), np.float32), np.array([0, 1, 2]))
    assert bank.size == 3 and bank.cursor == 3
    slots = bank.add(np.full((4, 2), 2, np.float32), np.array([3, 4, 5, 6]))
    assert slots.tolist() == [3, 4, 0, 1] and bank.size == 5
    assert bank.labels.tolist() == [5, 6, 2, 3, 4]  # the two oldest were replaced


@pytest.mark.parametrize("kind", ["flat", "ivf", "exact"])
def test_faiss_search_equals_exact_search(kind):
    rng = np.random.default_rng(0)
    bank = MemoryBank(capacity=2000, dim=16)
    index = BankIndex(bank, kind=kind, nprobe=4096)  # ivf probing every list is exact too
    for _ in range(10):  # the ring buffer turns past its capacity, the index follows
        index.update(bank.add(rng.normal(size=(300, 16)).astype(np.float32), rng.integers(0, 5, 300)))
    queries = rng.normal(size=(32, 16)).astype(np.float32)
    d_f, i_f = index.search(queries, 5)
    d_e, i_e = exact_search(bank.embeddings, queries, 5)
    assert np.array_equal(i_f, i_e)
    assert np.allclose(d_f, d_e, rtol=1e-4, atol=1e-4)


def test_the_exact_index_needs_no_faiss(monkeypatch):
    from occlusion_distill.distillers import mining

    def missing():
        raise UsageError("faiss is not installed")

    monkeypatch.setattr(mining, "require_faiss", missing)
    bank = MemoryBank(capacity=8, dim=2)
    index = BankIndex(bank, kind="exact")
    index.update(bank.add(np.array([[0.0, 0.0], [2.0, 0.0], [5.0, 0.0]], np.float32), np.array([0, 1, 2])))
    d, i = index.search(np.array([[1.9, 0.0]], np.float32), 2)
    assert i.tolist() == [[1, 0]] and np.allclose(d, [[0.01, 3.61]], atol=1e-4)
    with pytest.raises(UsageError, match="faiss is not installed"):
        BankIndex(bank, kind="flat")
    # the default finds the same neighbours without it, up to the size where only faiss's ivf will do
    monkeypatch.setattr(mining, "has_faiss", lambda: False)
    assert BankIndex(bank).kind == "exact"
    with pytest.raises(UsageError, match="faiss is not installed"):
        BankIndex(MemoryBank(capacity=mining.IVF_ABOVE + 1, dim=2))
    with pytest.raises(UsageError, match="index must be auto, flat, ivf or exact"):
        BankIndex(bank, kind="hnsw")


def _bank_with(embeddings, labels):
    embeddings = np.asarray(embeddings, np.float32)
    bank = MemoryBank(capacity=len(embeddings) + 3, dim=embeddings.shape[1])
    index = BankIndex(bank, kind="flat")
    index.update(bank.add(np.asarray(embeddings, np.float32), np.asarray(labels, np.float32)))
    return bank, index


def test_hard_miner_returns_the_closest_valid_negative():
    bank, index = _bank_with([[0.1, 0.0], [0.2, 0.0], [1.0, 0.0], [3.0, 0.0]], [0, 1, 1, 2])
    miner = registry("miners").create("hard")
    anchors = np.array([[0.0, 0.0], [0.0, 0.0], [2.9, 0.0]], np.float32)
    slots = miner.mine(anchors, np.array([0, 1, 2]), np.zeros(3), bank, index)
    # class 0: closest other-class entry is slot 1; class 1: slot 0 (class 0); class 2 at 2.9: slot 2
    assert slots.tolist() == [1, 0, 2]
    # nothing valid: -1
    bank, index = _bank_with([[0.0, 0.0]], [4])
    assert miner.mine(anchors[:1], np.array([4]), np.zeros(1), bank, index).tolist() == [-1]


def test_miners_respect_the_age_gap_and_semi_hard_skips_easier_than_positive():
    bank, index = _bank_with([[0.1, 0.0], [0.5, 0.0], [2.0, 0.0]], [30.0, 36.0, 50.0])
    hard = registry("miners").create("hard", regression=True, age_gap=10.0)
    slots = hard.mine(np.zeros((1, 2), np.float32), np.array([31.0]), np.zeros(1), bank, index)
    assert slots.tolist() == [2]  # ages 30 and 36 are within 10 years of 31
    bank, index = _bank_with([[0.1, 0.0], [0.5, 0.0], [2.0, 0.0]], [1, 1, 1])
    semi = registry("miners").create("semi-hard")
    slots = semi.mine(np.zeros((1, 2), np.float32), np.array([0]), np.array([0.3]), bank, index)
    assert slots.tolist() == [1]  # the closest farther than the positive (0.3)
    rand = registry("miners").create("random", seed=1)
    picks = {int(rand.mine(np.zeros((1, 2), np.float32), np.array([0]), np.zeros(1), bank, index)[0])
             for _ in range(30)}
    assert picks <= {0, 1, 2} and len(picks) > 1
    mask = valid_negatives(np.array([0, 1]), np.array([[0, 1], [0, 1]], np.float32), False, 10)
    assert mask.tolist() == [[False, True], [True, False]]


def test_triplet_distiller_trains_on_the_bank():
    from occlusion_distill.models.network import ModelOutput

    task = registry("tasks").create("expression")
    task.output_dim = 3
    dist = registry("distillers").create("triplet", task=task, bank_size=64)
    dist.prepare(student_dim=8, teacher_dim=6)
    assert dist.projection is not None  # sizes differ: a projection, trained with the student
    torch.manual_seed(0)
    terms = None
    for _ in range(4):
        s = ModelOutput(torch.randn(16, 3, requires_grad=True), torch.randn(16, 8, requires_grad=True))
        t = ModelOutput(torch.randn(16, 3), torch.randn(16, 6))
        terms = dist(s, torch.randint(0, 3, (16,)), t)
        terms["loss"].backward()
    assert dist.bank.size == 64 and terms["mined"] > 0.9 and terms["triplet"] > 0
    assert dist.projection.weight.grad is not None


@pytest.mark.parametrize("task_name", ["expression", "age"])
def test_batch_negatives_are_the_hardest_valid_faces_of_the_batch_and_carry_gradient(task_name):
    from occlusion_distill.models.network import ModelOutput

    task = registry("tasks").create(task_name)
    task.output_dim = 1 if task.regression else 3
    dist = registry("distillers").create("triplet", task=task, negatives="batch", normalize=False, margin=10.0)
    assert dist.hparams()["negatives"] == "batch"
    assert "negatives" not in registry("distillers").create("triplet", task=task).hparams()  # old keys stay
    dist.prepare(student_dim=2, teacher_dim=2)
    # four faces on a line: each one's closest face of another class (or 10+ years apart) is face 2, and face
    # 2's is face 1; a face is never its own negative
    e = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [4.0, 0.0]], requires_grad=True)
    y = torch.tensor([20.0, 21.0, 45.0, 60.0]) if task.regression else torch.tensor([0, 0, 1, 2])
    positive = torch.zeros(4, 2)
    head = torch.zeros(4, task.output_dim)
    terms = dist(ModelOutput(head, e), y, ModelOutput(head, positive))
    negatives = [2, 2, 1, 2]

    def expected(emb, negative):
        return torch.relu((emb - positive).norm(dim=1) - (emb - negative).norm(dim=1) + 10.0).mean()

    assert torch.allclose(terms["triplet"], expected(e, e.detach()[negatives]))
    assert dist.bank is None  # nothing is kept between batches
    dist.lambda_ = 1.0
    loss = dist(ModelOutput(head, e), y, ModelOutput(head, positive))["loss"]
    grad = torch.autograd.grad(loss, e)[0]
    # the gradient flows through the negative as well as the anchor, unlike a (detached) bank negative
    leaf = e.detach().clone().requires_grad_(True)
    through_both = torch.autograd.grad(expected(leaf, leaf[negatives]), leaf)[0]
    anchor_only = torch.autograd.grad(expected(leaf, leaf.detach()[negatives]), leaf)[0]
    assert torch.allclose(grad, through_both) and not torch.allclose(grad, anchor_only)


@pytest.mark.parametrize("task_name", ["expression", "age"])
def test_triplet_with_kd_adds_kds_term_to_its_own(task_name):
    from occlusion_distill.distillers.kd import soft_target_term
    from occlusion_distill.models.network import ModelOutput

    task = registry("tasks").create(task_name)
    task.output_dim = 1 if task.regression else 3
    k = task.output_dim
    plain = registry("distillers").create("triplet", task=task, bank_size=64)
    both = registry("distillers").create("triplet", task=task, bank_size=64, kd=0.4, tau=2.0)
    assert "kd" not in plain.hparams() and both.hparams()["kd"] == 0.4 and both.hparams()["tau"] == 2.0
    for d in (plain, both):
        d.prepare(student_dim=6, teacher_dim=6)
    torch.manual_seed(0)
    s, t = ModelOutput(torch.randn(16, k), torch.randn(16, 6)), ModelOutput(torch.randn(16, k), torch.randn(16, 6))
    y = torch.rand(16) * 50 if task.regression else torch.randint(0, 3, (16,))
    a, b = plain(s, y, t), both(s, y, t)
    assert torch.allclose(b["triplet"], a["triplet"]) and torch.allclose(b["distill"], soft_target_term(task, s, t, 2.0))
    assert torch.allclose(b["loss"], 0.6 * a["task"] + 0.4 * b["distill"] + plain.lambda_ * a["triplet"])


@pytest.mark.parametrize("task_name, bad, error, message", [
    ("expression", dict(miner="hardest"), PluginError, "unknown miner 'hardest'; did you mean 'hard'"),
    ("expression", dict(positive="other"), UsageError, "triplet: positive must be 'same'"),
    ("age", dict(positive="class"), UsageError, "triplet: positive=class needs classes"),
    ("expression", dict(bank_size=0), UsageError, "triplet: bank_size must be a positive integer, not 0"),
    ("expression", dict(bank_size=True), UsageError, "triplet: bank_size must be a positive integer, not True"),
    ("expression", dict(bank_size=2.5), UsageError, "triplet: bank_size must be a positive integer, not 2.5"),
    ("expression", dict(index="hnsw"), UsageError, "triplet: index must be auto, flat, ivf or exact, not 'hnsw'"),
    ("expression", dict(margin=-1), UsageError, "triplet: margin must be a number >= 0, not -1"),
    ("expression", dict(margin=float("nan")), UsageError, "triplet: margin must be a number >= 0, not nan"),
    ("expression", dict(margin="wide"), UsageError, "triplet: margin must be a number >= 0, not 'wide'"),
    ("expression", dict(lambda_=-0.5), UsageError, "triplet: lambda must be a number >= 0, not -0.5"),
    ("expression", dict(lambda_=float("inf")), UsageError, "triplet: lambda must be a number >= 0, not inf"),
    ("age", dict(age_gap=0), UsageError, "triplet: age_gap must be a positive number (years), not 0"),
    ("age", dict(age_gap=float("nan")), UsageError, "triplet: age_gap must be a positive number (years), not nan"),
    ("expression", dict(normalize="no"), UsageError, "triplet: normalize must be true or false, not 'no'"),
    ("expression", dict(bank=64), UsageError, "unexpected keyword argument 'bank'; did you mean"),
    ("expression", dict(kd=1.5), UsageError, "triplet: kd must be in [0, 1] (the weight of kd's loss), not 1.5"),
    ("expression", dict(kd=0.5, tau=0), UsageError, "triplet: tau must be a positive number, not 0"),
    ("expression", dict(negatives="queue"), UsageError, "triplet: negatives must be 'bank' (the memory bank) or"),
])
def test_triplet_rejects_each_bad_option_by_name(task_name, bad, error, message):
    with pytest.raises(error) as err:
        registry("distillers").build("triplet", task=registry("tasks").create(task_name), **bad)
    assert type(err.value) is error and message in str(err.value) and "\n" not in str(err.value)


SMALL = ("--dataset-arg", "n_train=192", "--dataset-arg", "n_val=64", "--dataset-arg", "n_test=96")


def test_cached_teacher_outputs_equal_online_ones_for_triplet(tmp_path):
    import json

    from conftest import run_cli

    results = {}
    for mode in ("cached", "online"):
        out = tmp_path / mode
        res = run_cli("run", "--distiller", "triplet", "--preset", "smoke", "--epochs", "1", "--teacher-outputs", mode,
                      *SMALL, "--no-cache", "--quiet", "--out", out)
        assert res.returncode == 0, res.stderr
        results[mode] = json.loads((out / "metrics.json").read_text())["student"]
    assert results["cached"] == pytest.approx(results["online"], abs=1e-6)


def test_combined_head_trains_and_scores(tmp_path, cli, monkeypatch):
    import json

    # a cache of its own: the worker's shared one may already hold teacher outputs from another test
    cache = tmp_path / "cache"
    monkeypatch.setenv("OCCDISTILL_CACHE", str(cache))
    out = tmp_path / "combined"
    res = cli("run", "--task", "age", "--occlusion", "vr-headset", "--distiller", "combined", "--preset", "smoke",
              "--epochs", "1", *SMALL, "--quiet", "--out", out)
    assert res.returncode == 0, res.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert np.isfinite(metrics["student"]) and metrics["student"] < 60  # years of MAE: a real prediction
    assert {"student:kd", "student:triplet"} <= set(metrics["reused_from_cache"])
    stored = list((cache / "teacher-outputs").glob("*.pt"))
    assert len(stored) == 1  # the teacher's outputs, computed once for both members, are kept for later runs
    again = tmp_path / "again"  # the members and the combined student come from the run cache
    res = cli("run", "--task", "age", "--occlusion", "vr-headset", "--distiller", "combined", "--preset", "smoke",
              "--epochs", "1", *SMALL, "--quiet", "--out", again)
    assert res.returncode == 0, res.stderr
    second = json.loads((again / "metrics.json").read_text())
    assert second["reused_from_cache"]["student"] and second["student"] == pytest.approx(metrics["student"])


def test_bench_overhead_json_schema(tmp_path, cli):
    import json

    out = tmp_path / "overhead.json"
    res = cli("bench", "overhead", "--faces", "256", "--bank-size", "2000", "--quiet", "--json", out)
    assert res.returncode == 0, res.stderr
    r = json.loads(out.read_text())
    assert set(r["epoch_seconds"]) == {"finetune", "kd", "triplet", "finetune+augment", "kd+augment"}
    assert r["ratio_to_finetune"]["finetune"] == 1.0
    assert set(r["mining_ms_per_step"]["2000"]) >= {"faiss", "torch"}
    assert all(v > 0 for v in r["epoch_seconds"].values())


def test_ivf_lists_are_trained_on_the_full_bank_and_miners_widen_their_search():
    rng = np.random.default_rng(2)
    bank = MemoryBank(capacity=4000, dim=8)
    index = BankIndex(bank, kind="ivf")
    index.update(bank.add(rng.normal(size=(500, 8)).astype(np.float32), np.zeros(500)))
    assert index.index is None  # not full yet: searched exactly
    for _ in range(7):
        index.update(bank.add(rng.normal(size=(500, 8)).astype(np.float32), np.zeros(500)))
    assert index.index is not None and index.index.nlist == min(int(4 * np.sqrt(4000)), 4000 // 39)
    # one valid negative, far from the anchor: beyond the first 64 candidates, still found
    bank, index = _bank_with(np.concatenate([np.zeros((200, 2)), [[50.0, 0.0]]]), [0] * 200 + [1])
    slots = registry("miners").create("hard").mine(np.zeros((1, 2), np.float32), np.array([0]), np.zeros(1), bank,
                                                   index)
    assert slots.tolist() == [200]


def test_a_layer_gives_the_embedding_from_its_pooled_map_with_the_teacher_online(tmp_path, monkeypatch):
    from occlusion_distill.config import RunConfig
    from occlusion_distill.engine import trainer
    from occlusion_distill.engine.cache import ModelCache
    from occlusion_distill.protocol.pipeline import ProtocolRun
    from occlusion_distill.protocol.reporting import NullReporter

    seen = []
    original = TripletKD._embeddings

    def spy(self, student, teacher):
        s, t = original(self, student, teacher)
        seen.append((tuple(s.shape), tuple(t.shape), set(student.features or {}), set(teacher.features or {})))
        return s, t

    def no_table(*args, **kwargs):
        raise AssertionError("a layer's map needs the teacher online, not its stored outputs")

    monkeypatch.setattr(TripletKD, "_embeddings", spy)
    monkeypatch.setattr(trainer, "TeacherTable", no_table)

    def run_with(layer):
        cfg = RunConfig.from_options("smoke", distiller="triplet", teacher_epochs=1, student_epochs=1,
                                     distiller_args={"layer": layer, "bank_size": 64},
                                     dataset_args={"n_train": 128, "n_val": 32, "n_test": 32})
        run = ProtocolRun(cfg, NullReporter(), ModelCache(tmp_path / "cache"))
        run.teacher_table = no_table
        return run.student()

    run_with("features.13")  # simple-cnn at 32 px: its third block, 96 channels at 8x8
    assert seen and all(s == t == (64, 96) and sf == tf == {"features.13"} for s, t, sf, tf in seen)
    with pytest.raises(UsageError, match="triplet: the student backbone has no layer 'features.99'"):
        run_with("features.99")


def test_a_layer_the_backbone_lacks_is_refused_before_any_data_is_loaded(monkeypatch):
    from occlusion_distill.config import RunConfig
    from occlusion_distill.protocol import pipeline
    from occlusion_distill.protocol.reporting import NullReporter

    def no_data(*args, **kwargs):
        raise AssertionError("preflight must refuse the layer before the data is loaded")

    monkeypatch.setattr(pipeline.ProtocolRun, "load_data", no_data)
    cfg = RunConfig.from_options("smoke", distiller="triplet", distiller_args={"layer": "features.99"})
    with pytest.raises(UsageError, match="no layer 'features.99'"):
        pipeline.ProtocolRun(cfg, NullReporter()).preflight()
    pipeline.preflight(cfg.replace(distiller_args={"layer": "features.13"}))  # a real layer passes


def test_a_combined_members_layer_the_backbone_lacks_is_refused_before_any_data_is_loaded(monkeypatch):
    from occlusion_distill.config import RunConfig
    from occlusion_distill.protocol import pipeline
    from occlusion_distill.protocol.reporting import NullReporter

    def no_data(*args, **kwargs):
        raise AssertionError("preflight must refuse the member's layer before the data is loaded")

    monkeypatch.setattr(pipeline.ProtocolRun, "load_data", no_data)
    cfg = RunConfig.from_options("smoke", distiller="combined",
                                 distiller_args={"member_args": {"triplet": {"layer": "features.99"}}})
    with pytest.raises(UsageError, match="combined: member triplet: .*no layer 'features.99'"):
        pipeline.ProtocolRun(cfg, NullReporter()).preflight()
    ok = cfg.replace(distiller_args={"member_args": {"triplet": {"layer": "features.13"}}})
    assert pipeline.preflight(ok).distiller.members == ["kd", "triplet"]


def test_a_checkpoint_keeps_the_miners_stream_with_batch_negatives_too():
    from occlusion_distill.models.network import ModelOutput

    task = registry("tasks").create("expression")
    task.output_dim = 3

    def mined(dist, seed_batches):
        out = []
        for b in seed_batches:
            g = torch.Generator().manual_seed(b)
            e, y = torch.randn(16, 4, generator=g), torch.randint(0, 3, (16,), generator=g)
            out.append(float(dist(ModelOutput(torch.zeros(16, 3), e), y, ModelOutput(torch.zeros(16, 3), e))["triplet"]))
        return out

    ref = registry("distillers").create("triplet", task=task, negatives="batch", miner="random", margin=5.0)
    ref.prepare(4, 4, seed=5)
    whole = mined(ref, [0, 1, 2, 3])
    first = registry("distillers").create("triplet", task=task, negatives="batch", miner="random", margin=5.0)
    first.prepare(4, 4, seed=5)
    mined(first, [0, 1])
    state = first.get_extra_state()
    resumed = registry("distillers").create("triplet", task=task, negatives="batch", miner="random", margin=5.0)
    resumed.prepare(4, 4, seed=5)  # what a resumed stage does before its checkpoint is loaded
    resumed.set_extra_state(state)
    assert mined(resumed, [2, 3]) == whole[2:]


def test_a_distiller_whose_setup_breaks_fails_preflight_in_one_line_naming_it(broken):
    from occlusion_distill.config import RunConfig
    from occlusion_distill.distillers.kd import SoftTargetKD
    from occlusion_distill.protocol.pipeline import preflight

    class BrokenSetup(SoftTargetKD):
        def setup(self, student, teacher, example):
            raise RuntimeError("no such buffer")

    name = broken("distillers", "broken-setup", BrokenSetup)
    with pytest.raises(PluginError, match="distiller 'broken-setup' from broken-test==0 failed in setup\\(\\) on an "
                                          "untrained simple-cnn .*RuntimeError: no such buffer"):
        preflight(RunConfig.from_options("smoke", distiller=name))
