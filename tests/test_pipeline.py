import json
from pathlib import Path

import numpy as np
import pytest
import torch

from occlusion_distill.config import RunConfig
from occlusion_distill.data.synthfaces import generate
from occlusion_distill.data.paired import PairedFaces, hflip, to_tensor
from occlusion_distill.engine.cache import ModelCache
from occlusion_distill.protocol.pipeline import gap_closed, run
from occlusion_distill.engine.stage import TeacherTable
from occlusion_distill.models import build_model
from occlusion_distill.registry import create
from occlusion_distill.report import NullReporter

METRIC_KEYS = {"task", "occlusion", "distiller", "metric", "higher_is_better", "teacher_clean",
               "teacher_occluded", "baseline", "student", "gap_closed", "seconds"}


def test_gap_closed_by_hand():
    assert gap_closed(80.0, 70.0, 90.0) == pytest.approx(0.5)  # accuracy: higher is better
    assert gap_closed(8.0, 10.0, 6.0, higher_is_better=False) == pytest.approx(0.5)  # MAE: 2 of 4 years closed
    assert gap_closed(11.0, 10.0, 6.0, higher_is_better=False) == pytest.approx(-0.25)  # worse than baseline
    assert gap_closed(5.0, 5.0, 5.0) is None
    # no gap to close when the clean-face teacher does not beat the baseline
    assert gap_closed(66.0, 67.0, 65.0) is None
    assert gap_closed(8.0, 10.0, 12.0, higher_is_better=False) is None


def test_cli_end_to_end_smoke_run(cli, tmp_path):
    out = tmp_path / "run"
    res = cli("run", "--task", "expression", "--occlusion", "lower-half", "--distiller", "kd",
              "--preset", "smoke", "--out", out)
    assert res.returncode == 0, res.stderr
    assert "gap closed" in res.stdout and "Traceback" not in res.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert METRIC_KEYS <= set(metrics)
    assert metrics["metric"] == "accuracy" and metrics["higher_is_better"] is True
    for key in ("teacher_clean", "teacher_occluded", "baseline", "student"):
        assert 0.0 <= metrics[key] <= 100.0
    expected_gap = gap_closed(metrics["student"], metrics["baseline"], metrics["teacher_clean"], True)
    if expected_gap is None:
        assert metrics["gap_closed"] is None
    else:
        assert metrics["gap_closed"] == pytest.approx(expected_gap)
    assert {"teacher", "baseline", "student", "total"} <= set(metrics["seconds"])
    config = json.loads((out / "config.json").read_text())
    assert config["distiller"] == "kd" and config["image_size"] == 32 and config["backbone"] == "simple-cnn"
    assert "command" in config
    report = (out / "report.md").read_text()
    assert "Gap closed" in report and "occdistill run" in report
    for name in ("teacher", "baseline", "student"):
        blob = torch.load(out / "checkpoints" / f"{name}.pt", weights_only=True)
        assert blob["state_dict"] and blob["task"]["output_dim"] == 7
    for plot in ("results.png", "training.png"):
        assert (out / "plots" / plot).read_bytes()[:4] == b"\x89PNG"
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no temporary directory left behind

    # A second run with another distiller reuses the teacher and the baseline from the run cache.
    out2 = tmp_path / "run2"
    res = cli("run", "--distiller", "finetune", "--preset", "smoke", "--out", out2)
    assert res.returncode == 0, res.stderr
    m2 = json.loads((out2 / "metrics.json").read_text())
    assert m2["reused_from_cache"]["teacher"] and m2["reused_from_cache"]["baseline"]
    assert m2["teacher_clean"] == pytest.approx(metrics["teacher_clean"])
    assert m2["baseline"] == pytest.approx(metrics["baseline"])
    assert m2["student"] == m2["baseline"]
    assert m2["gap_closed"] == (0.0 if m2["teacher_clean"] > m2["baseline"] else None)


def test_age_regression_smoke_via_cli(cli, tmp_path):
    res = cli("run", "--task", "age", "--occlusion", "upper-half", "--distiller", "kd", "--preset", "smoke",
              "--out", tmp_path / "age")
    assert res.returncode == 0, res.stderr
    m = json.loads((tmp_path / "age" / "metrics.json").read_text())
    assert m["metric"] == "mae" and m["higher_is_better"] is False and m["unit"] == "years"
    for key in ("teacher_clean", "teacher_occluded", "baseline", "student"):
        assert 0.0 < m[key] < 80.0


def test_augmented_run_via_cli_trains_every_stage_with_an_online_teacher(cli, tmp_path):
    res = cli("run", "--preset", "smoke", "--occlusion", "upper-half", "--augment", "rotate=5", "--epochs", "1",
              *[a for k, v in SMALL.items() for a in ("--dataset-arg", f"{k}={v}")], "--out", tmp_path / "aug",
              "--cache-dir", tmp_path / "cache")
    assert res.returncode == 0, res.stderr
    config = json.loads((tmp_path / "aug" / "config.json").read_text())
    assert config["augment"] == {"translate": 0.08, "scale": 0.1, "rotate": 5.0, "brightness": 0.2,
                                 "contrast": 0.2}
    assert config["teacher_outputs"] == "online"
    m = json.loads((tmp_path / "aug" / "metrics.json").read_text())
    assert all(0.0 <= m[k] <= 100.0 for k in ("teacher_clean", "baseline", "student"))


@pytest.mark.parametrize("n_train", [64, 128, 256, 320])  # 1, 2, 4 and 5 steps of 64
def test_a_stage_of_a_few_steps_trains(n_train):
    """OneCycleLR divided by zero when a stage's warm-up was exactly one step (4 steps in all)."""
    from occlusion_distill.protocol.pipeline import ProtocolRun

    cfg = RunConfig.from_options("smoke", teacher_epochs=1, dataset_args={"n_train": n_train, "n_val": 16,
                                                                           "n_test": 16})
    run_ = ProtocolRun(cfg, NullReporter(), ModelCache(None))
    run_.teacher()
    assert len(run_.histories["teacher"]) == 1


def test_gender_smoke_via_library(tmp_path):
    cfg = RunConfig.from_options("smoke", task="gender", occlusion="upper-half", distiller="kd")
    result = run(cfg, NullReporter(), ModelCache(tmp_path / "cache"))
    m = result.metrics
    assert m["metric"] == "accuracy" and METRIC_KEYS <= set(m)
    assert set(result.models) == {"teacher", "baseline", "student"}
    # the library run is reproducible: same config, same cache-free numbers
    again = run(cfg, NullReporter(), ModelCache(None)).metrics
    assert again["teacher_clean"] == pytest.approx(m["teacher_clean"])
    assert again["student"] == pytest.approx(m["student"])


def test_cached_teacher_outputs_equal_online_ones():
    faces = generate(24, 32, seed=1)
    task = create("tasks", "expression").setup(faces)
    teacher = build_model("simple-cnn", in_chans=3, image_size=32, output_dim=task.output_dim).eval()
    train = PairedFaces(faces, task.targets(faces), create("occlusions", "lower-half"), flip=True, seed=3)
    table = TeacherTable(teacher, train, torch.device("cpu"))
    flips = set()
    for i in range(len(faces)):
        item = train[i]
        flips.add(bool(item["flipped"]))
        with torch.no_grad():
            online = teacher(item["clean"][None])
        cached = table.lookup(item["index"][None], item["flipped"][None])
        assert torch.allclose(cached.logits, online.logits, atol=1e-5)
        assert torch.allclose(cached.embedding, online.embedding, atol=1e-5)
    assert flips == {False, True}  # both halves of the table were exercised


def test_paired_views_share_the_flip_and_occlusion_is_reproducible():
    faces = generate(6, 32, seed=2)
    ds = PairedFaces(faces, faces.labels["expression"], create("occlusions", "lower-half"), flip=True, seed=5)
    for i in range(len(faces)):
        a, b = ds[i], ds[i]
        assert torch.equal(a["occluded"], b["occluded"])
        img, lm = (hflip(faces.images[i], faces.landmarks[i]) if a["flipped"]
                   else (faces.images[i], faces.landmarks[i]))
        assert torch.equal(a["clean"], to_tensor(np.ascontiguousarray(img)[None])[0])
        # the occluded view is the clean one with pixels blacked out, never a different face
        visible = a["occluded"] != 0.0  # black, in the [0, 1] of to_tensor
        assert torch.equal(a["occluded"][visible], a["clean"][visible])


def test_failure_inside_a_run_leaves_no_run_directory(tmp_path, monkeypatch, capsys):
    from occlusion_distill import cli as cli_module
    from occlusion_distill.distillers import Distiller
    from occlusion_distill.registry import registry

    class Exploding(Distiller):
        """Raises on its first step."""

        def forward(self, student, targets, teacher=None):
            raise RuntimeError("kaboom")

    def explode(out: Path) -> str:
        # a cache of this test's own: whether teacher and baseline are trained here must not depend on
        # which tests ran before in the same worker
        with pytest.raises(SystemExit) as exit_info:
            cli_module.main(["run", "--distiller", "exploding", "--preset", "smoke", "--epochs", "1",
                             "--cache-dir", str(tmp_path / "cache"), "--out", str(out)])
        assert exit_info.value.code == 4  # a failure during the run
        err = capsys.readouterr().err
        assert "kaboom" in err and "Traceback" not in err
        assert "distiller 'exploding' from tests" in err
        return err

    registry("distillers").add("exploding", Exploding, origin="tests")
    try:
        # teacher and baseline trained in this run: the hidden partial run stays for --resume
        err = explode(tmp_path / "deep" / "run")
        assert not (tmp_path / "deep" / "run").exists()
        assert "continue with: occdistill run --resume" in err
        assert sorted(p.name for p in (tmp_path / "deep").iterdir()) == [".run.partial"]
        # teacher and baseline from the cache: this run finished nothing of its own, so nothing is left
        err = explode(tmp_path / "again" / "run")
        assert "--resume" not in err
        assert not (tmp_path / "again").exists() or not any((tmp_path / "again").iterdir())
    finally:
        registry("distillers").unregister("exploding")


def test_teacher_is_frozen_and_unchanged_by_distillation():
    faces = generate(96, 32, seed=1)
    task = create("tasks", "expression").setup(faces)
    teacher = build_model("simple-cnn", in_chans=3, image_size=32, output_dim=task.output_dim)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    from occlusion_distill.engine.stage import EvalSet, StageContext
    from occlusion_distill.engine.trainer import fit
    import copy

    student = copy.deepcopy(teacher)
    train = PairedFaces(faces, task.targets(faces), create("occlusions", "lower-half"), flip=True)
    for mode in ("cached", "online"):
        ctx = StageContext("student", student, task, train, EvalSet(to_tensor(faces.images[:32]), task.targets(faces)[:32]),
                           "occluded", 1, 32, 1e-3, 0.0, torch.device("cpu"), 0, teacher=teacher, teacher_outputs=mode)
        fit(ctx, create("distillers", "kd", task=task))
        for k, v in teacher.state_dict().items():
            assert torch.equal(v, before[k]), k  # BatchNorm statistics included: the teacher stays in eval
        assert not any(p.requires_grad for p in teacher.parameters())
    assert any(not torch.equal(v, before[k]) for k, v in student.state_dict().items())


def test_cache_keys_change_with_what_changes_the_model(tmp_path):
    from occlusion_distill.protocol.pipeline import _student_key, _teacher_key, build_parts, resolved_settings

    def keys(**options):
        cfg = RunConfig.from_options("smoke", **options)
        parts = build_parts(cfg)
        settings = resolved_settings(cfg, parts)
        t = _teacher_key(cfg, settings)
        return t, _student_key(cfg, settings, t, cfg.distiller, settings["distiller"], parts.origins["distiller"])

    t0, s0 = keys()
    assert keys() == (t0, s0)
    for change in ({"seed": 1}, {"image_size": 36}, {"dataset_args": {"n_train": 700}}, {"lr": 1e-3},
                   {"backbone": "resnet10t"}, {"teacher_epochs": 4}):
        t, s = keys(**change)
        assert t != t0, change
    for change in ({"distiller_args": {"tau": 2.0}}, {"occlusion_args": {"split": 0.6}}, {"student_epochs": 3},
                   {"occlusion": "upper-half"}, {"eval_seed": 1}):
        t, s = keys(**change)
        assert t == t0 and s != s0, change


def test_validation_and_test_labels_are_never_noisy(tmp_path):
    from occlusion_distill.data.synthfaces import SynthFaces

    clean, noisy = SynthFaces(n_train=50, n_val=50, n_test=50, label_noise=0.0), \
        SynthFaces(n_train=50, n_val=50, n_test=50, label_noise=0.5)
    for split in ("val", "test"):
        a, b = clean.load(split, image_size=32, channels=1), noisy.load(split, image_size=32, channels=1)
        for key in ("expression", "gender", "age"):
            assert np.array_equal(a.labels[key], b.labels[key])
    a, b = clean.load("train", image_size=32, channels=1), noisy.load("train", image_size=32, channels=1)
    assert not np.array_equal(a.labels["expression"], b.labels["expression"])


SMALL = {"n_train": 128, "n_val": 48, "n_test": 48}  # faces per split: a whole run in seconds


def _count_builds(monkeypatch) -> list[tuple[str, str]]:
    """Every plugin built through the registry from now on, as (kind, name)."""
    from occlusion_distill.registry import Registry

    built: list[tuple[str, str]] = []
    real = Registry.build

    def build(self, name, **options):
        built.append((self.kind, name))
        return real(self, name, **options)

    monkeypatch.setattr(Registry, "build", build)
    return built


def test_library_writes_the_complete_run_directory_and_builds_each_plugin_once(tmp_path, monkeypatch):
    from occlusion_distill.protocol import run_to_dir

    built = _count_builds(monkeypatch)
    cfg = RunConfig.from_options("smoke", task="gender", occlusion="upper-half", distiller="kd", teacher_epochs=1,
                                 student_epochs=1, dataset_args=SMALL)
    out = tmp_path / "runs" / "gender"
    result = run_to_dir(cfg, out, cache=ModelCache(tmp_path / "cache"))
    assert sorted(built) == [("datasets", "synthfaces"), ("distillers", "kd"), ("occlusions", "upper-half"),
                             ("tasks", "gender")]
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == ["checkpoints/baseline.pt", "checkpoints/student.pt", "checkpoints/teacher.pt", "config.json",
                     "history.json", "metrics.json", "plots/results.png", "plots/training.png", "report.md"]
    assert result.run_dir == out and sorted(p.name for p in out.parent.iterdir()) == ["gender"]  # no partial left
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(result.metrics))
    assert set(json.loads((out / "history.json").read_text())) == {"teacher", "baseline", "student"}
    config = json.loads((out / "config.json").read_text())
    assert RunConfig.from_dict(config) == cfg and config["resolved"]["distiller"] == {"lambda": 0.5, "tau": 4.0}
    assert config["command"] == f"run_to_dir(cfg, {str(out)!r})"
    assert f"Made by: `run_to_dir(cfg, {str(out)!r})`" in (out / "report.md").read_text()
    blob = torch.load(out / "checkpoints" / "student.pt", weights_only=True)
    assert blob["task"]["output_dim"] == 2 and blob["image_size"] == 32 and blob["channels"] == 3
    # the data set kept its generated faces in the run cache it was given (FaceDataset.use_cache)
    assert list((tmp_path / "cache" / "synthfaces").glob("*.npz"))


def test_a_bumped_version_changes_the_students_key_even_when_hparams_leaves_it_out(broken):
    # kd overrides hparams() without "version" (its cached students keep their keys); bumping the version
    # of such a distiller must still keep its students of the old version from being reused
    from occlusion_distill.distillers import SoftTargetKD
    from occlusion_distill.protocol import ProtocolRun

    class KDv2(SoftTargetKD):
        version = 2

    name = broken("distillers", "kd-bumped", KDv2)
    settings = {}
    for distiller in ("kd", name):
        cfg = RunConfig.from_options("smoke", distiller=distiller, dataset_args=SMALL)
        run = ProtocolRun(cfg)
        run.preflight()
        settings[distiller] = run.settings["distiller"]
    assert settings["kd"] == {"lambda": 0.5, "tau": 4.0}  # version 1: the key every cached kd student has
    assert settings[name] == {"lambda": 0.5, "tau": 4.0, "version": 2}


def test_protocol_run_builds_its_plugins_once_and_points_the_data_at_its_cache(tmp_path, monkeypatch):
    from occlusion_distill.protocol import NullReporter as Silent, ProtocolRun, Reporter
    from occlusion_distill.protocol.keys import resolved_settings, teacher_key
    from occlusion_distill.report import RichReporter

    built = _count_builds(monkeypatch)
    cfg = RunConfig.from_options("smoke", task="expression", occlusion="lower-half", distiller="kd", dataset_args=SMALL)
    protocol = ProtocolRun(cfg, cache=ModelCache(tmp_path / "cache"))
    parts = protocol.preflight()
    assert protocol.preflight() is parts and protocol.load_data() is protocol.load_data()
    assert protocol.teacher_key == teacher_key(cfg, resolved_settings(cfg, parts))
    assert len(built) == 4 and len(set(built)) == 4
    assert parts.dataset.cache_dir == tmp_path / "cache"
    assert len(protocol.load_data().train) == SMALL["n_train"] and protocol.timings.keys() == {"data"}
    # no cache: the data set keeps nothing
    assert ProtocolRun(cfg).preflight().dataset.cache_dir is None
    for reporter in (Silent(), NullReporter(), RichReporter(quiet=True)):
        assert isinstance(reporter, Reporter)


def test_a_replica_is_a_second_student_of_the_same_kind_trained_on_its_own_draws(tmp_path):
    from occlusion_distill.protocol import ProtocolRun

    cfg = RunConfig.from_options("smoke", task="expression", occlusion="lower-half", distiller="combined",
                                 distiller_args={"members": "finetune,finetune:1"}, teacher_epochs=1,
                                 student_epochs=1, dataset_args=SMALL)
    protocol = ProtocolRun(cfg, cache=ModelCache(tmp_path / "cache"))
    baseline, replica = protocol.student_for("finetune"), protocol.student_for("finetune:1")
    assert baseline is protocol.baseline()
    differs = [k for k, v in baseline.state_dict().items() if not torch.equal(v, replica.state_dict()[k])]
    assert differs  # same teacher, same recipe, other draws: another model
    assert protocol.load_data().train.seed == cfg.seed  # the run's own pairs keep the run's seed
    again = ProtocolRun(cfg, cache=ModelCache(tmp_path / "cache")).student_for("finetune:1")
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in replica.state_dict().items())  # cached
    # the ensemble control: combined's head on the two
    assert np.isfinite(protocol.run().metrics["student"])


@pytest.mark.parametrize("members, message", [("finetune,finetune", "each once"),
                                               ("finetune,finetune:0", "a replica is NAME:K"),
                                               ("kd,combined:1", "other distillers")])
def test_bad_members_are_one_line(members, message):
    from occlusion_distill.errors import UsageError
    from occlusion_distill.registry import registry

    task, _ = registry("tasks").build("expression")
    with pytest.raises(UsageError, match=message):
        registry("distillers").build("combined", task=task, members=members)


def test_a_member_with_options_is_the_student_of_a_run_with_those_options(tmp_path):
    """``member_args`` gives a member the options of a run of that distiller alone: the member is that
    run's student, read from the run cache, and not the default-option student."""
    from occlusion_distill.protocol import ProtocolRun

    common = dict(task="expression", occlusion="lower-half", teacher_epochs=1, student_epochs=1, dataset_args=SMALL)
    alone = ProtocolRun(RunConfig.from_options("smoke", distiller="kd", distiller_args={"lambda_": 1.0, "tau": 2.0},
                                               **common), cache=ModelCache(tmp_path / "cache"))
    kd = alone.student()
    cfg = RunConfig.from_options("smoke", distiller="combined", **common, distiller_args={
        "members": "finetune,kd", "member_args": {"kd": {"lambda": 1.0, "tau": 2.0}}})
    protocol = ProtocolRun(cfg, cache=ModelCache(tmp_path / "cache"))
    dist = protocol.preflight().distiller
    assert dist.member_args == {"kd": {"lambda_": 1.0, "tau": 2.0}} and dist.hparams()["member_args"] == dist.member_args
    combined = protocol.student()
    assert protocol.cached["student:kd"]  # the run's student, not trained again
    member = combined.members[1]
    assert all(torch.equal(v, member.state_dict()[k]) for k, v in kd.state_dict().items())
    default = protocol.student_for("kd")
    assert not protocol.cached["student:kd"]  # λ 0.5, τ 4: another student
    assert any(not torch.equal(v, default.state_dict()[k]) for k, v in kd.state_dict().items())


@pytest.mark.parametrize("member_args, message", [({"triplet": {"tau": 2}}, "not a member"),
                                                   ({"kd": {"tua": 2}}, "did you mean 'tau'"),
                                                   ({"kd": {"lambda": 2.0}}, "lambda must be in"),
                                                   ({"kd": 2}, "maps a member to its options"),
                                                   ({"kd": {"lambda": 1.0, "lambda_": 0.5}}, "option 'lambda_' twice"),
                                                   ({"kd": {"tau": "x"}}, "combined: member_args: distiller 'kd'")])
def test_bad_member_args_are_one_line(member_args, message):
    from occlusion_distill.registry import registry

    from occlusion_distill.errors import OccdistillError

    task, _ = registry("tasks").build("expression")
    with pytest.raises(OccdistillError, match=message) as info:
        registry("distillers").build("combined", task=task, members="finetune,kd", member_args=member_args)
    assert "\n" not in str(info.value)
    assert registry("distillers").build("combined", task=task, members="finetune,kd",
                                        member_args={"kd": {"tau": None}})[0].member_args == {}  # None: the default


@pytest.mark.parametrize("task", ["expression", "age"])
def test_combined_average_is_the_mean_of_its_members(tmp_path, task):
    from occlusion_distill.protocol import ProtocolRun

    cfg = RunConfig.from_options("smoke", task=task, occlusion="lower-half", distiller="combined",
                                 distiller_args={"members": "finetune,finetune:1", "combine": "average"},
                                 teacher_epochs=1, student_epochs=1, dataset_args=SMALL)
    protocol = ProtocolRun(cfg, cache=ModelCache(tmp_path / "cache"))
    student = protocol.student()
    x = protocol.load_data().test_occluded.images[:8]
    with torch.no_grad():
        outs = [protocol.student_for(m)(x).logits for m in ("finetune", "finetune:1")]
        got = student(x).logits
    if task == "age":
        assert torch.allclose(got, (outs[0] + outs[1]) / 2, atol=1e-6)
    else:
        probs = (outs[0].softmax(1) + outs[1].softmax(1)) / 2
        assert torch.allclose(got.exp(), probs, atol=1e-6)
    assert protocol.histories["student"][0]["epoch"] == 1
    # a new option leaves the head's key as it was
    from occlusion_distill.registry import registry

    head = registry("distillers").create("combined", task=protocol.preflight().task)
    assert head.hparams() == {"members": ["kd", "triplet"], "l2_grid": [1e-4, 1e-3, 1e-2, 1e-1, 1.0]}
    from occlusion_distill.errors import UsageError

    with pytest.raises(UsageError, match="combine must be head or average"):
        registry("distillers").create("combined", task=protocol.preflight().task, combine="vote")


def test_stored_weights_of_another_network_are_one_line(tmp_path):
    from occlusion_distill.errors import RunFailed
    from occlusion_distill.protocol import ProtocolRun

    cfg = RunConfig.from_options("smoke", dataset_args=SMALL)
    cache = ModelCache(tmp_path / "cache")
    run = ProtocolRun(cfg, cache=cache)
    cache.put("teachers", run.teacher_key, {"backbone.other.weight": torch.zeros(2)}, [])
    with pytest.raises(RunFailed, match=r"stage 'teacher': the model stored in the run cache does not fit this "
                                        r"network \(.*\); it was made by another version") as err:
        run.teacher()
    assert "\n" not in str(err.value)
