"""bench sweep: settings ranked on occluded validation faces; test faces scored for the chosen one only."""

import json

import pytest

from occlusion_distill.bench.sweep import CHOSEN, LINES, config_for, parse_grid, run_sweep, settings_of
from occlusion_distill.config import RunConfig
from occlusion_distill.engine.cache import ModelCache
from occlusion_distill.errors import UsageError
from occlusion_distill.protocol.pipeline import ProtocolRun
from occlusion_distill.report import NullReporter

from conftest import run_main

SMALL = {"n_train": 128, "n_val": 48, "n_test": 48}


def test_grid_axes_parse_and_combine_in_order():
    grid = parse_grid(["lambda=0.5,0.9", "student-lr=1e-4,3e-4", "miner=hard"])
    assert grid == {"lambda_": [0.5, 0.9], "student_lr": [1e-4, 3e-4], "miner": ["hard"]}
    assert settings_of(grid)[:2] == [{"lambda_": 0.5, "student_lr": 1e-4, "miner": "hard"},
                                     {"lambda_": 0.5, "student_lr": 3e-4, "miner": "hard"}]
    assert len(settings_of(grid)) == 4


def test_grid_keys_are_spelt_as_distiller_args_spells_them():
    # one rule for --grid, --distiller-arg and suite args: any Python keyword gets its underscore
    assert parse_grid(["from=a,b", "bank-size=8"]) == {"from_": ["a", "b"], "bank_size": [8]}
    with pytest.raises(UsageError, match="twice"):
        parse_grid(["lambda=0.5", "lambda_=0.9"])


@pytest.mark.parametrize("axes, message", [(["lambda"], "KEY=V1,V2"), (["seed=0,1"], "give --seed"),
                                           (["occlusion=mask,lower-half"], "one run"), ([], "at least one"),
                                           (["tau=2", "tau=4"], "twice")])
def test_bad_grids_are_one_line(axes, message):
    with pytest.raises(UsageError, match=message):
        parse_grid(axes)


def test_a_setting_sets_run_options_and_the_distillers_options():
    base = RunConfig.from_options("smoke", distiller="kd", distiller_args={"tau": 3})
    cfg = config_for(base, {"lambda_": 0.9, "student_lr": 3e-4}, seed=2)
    assert cfg.distiller_args == {"tau": 3, "lambda_": 0.9} and cfg.student_lr == 3e-4 and cfg.seed == 2
    cfg = config_for(base, {"augment": "default"}, seed=0)
    assert cfg.augment["rotate"] == 10.0 and cfg.teacher_outputs == "online"


def test_run_options_are_checked_and_epochs_sets_both_stages():
    base = RunConfig.from_options("smoke", distiller="kd")
    cfg = config_for(base, {"epochs": 6.0}, seed=0)
    assert (cfg.teacher_epochs, cfg.student_epochs) == (6, 6) and isinstance(cfg.teacher_epochs, int)
    for setting, message in (({"student_lr": "fast"}, "'fast' is not a number"),
                             ({"student_epochs": 2.5}, "2.5 is not a whole number"),
                             ({"flip": 1}, "1 is not a true or false")):
        with pytest.raises(UsageError, match=message):
            config_for(base, setting, seed=0)
    # augmentation switched by the grid: the teacher runs online exactly when faces are augmented
    online = config_for(RunConfig.from_options("smoke", augment="default"), {"augment": None}, seed=0)
    assert online.augment == {} and online.teacher_outputs == "cached"
    assert config_for(base, {"augment": "off"}, seed=0).augment == {}
    # so for mixing; and either keeps the teacher online while the other is on
    mixed = config_for(base, {"mix": "mixup=0.2"}, seed=0)
    assert mixed.mix == {"mode": "mixup", "alpha": 0.2} and mixed.teacher_outputs == "online"
    assert config_for(mixed, {"mix": "none"}, seed=0).teacher_outputs == "cached"
    assert config_for(mixed, {"augment": "off"}, seed=0).teacher_outputs == "online"


def test_a_diverging_setting_ranks_last_and_the_sweep_goes_on(tmp_path, monkeypatch):
    from occlusion_distill.engine.stage import TrainingDiverged

    base = RunConfig.from_options("smoke", task="age", distiller="kd", occlusion="mask", teacher_epochs=1,
                                  student_epochs=1, dataset_args=SMALL)
    real_student = ProtocolRun.student

    def student(self):
        if self.cfg.distiller_args.get("lambda_") == 0.9:
            raise TrainingDiverged("stage 'student': the loss became NaN")
        return real_student(self)

    monkeypatch.setattr(ProtocolRun, "student", student)
    result = run_sweep(base, {"lambda_": [0.9, 0.1]}, [0], tmp_path / "s", NullReporter(),
                       ModelCache(tmp_path / "c"))
    assert result["chosen"]["setting"] == {"lambda_": 0.1} and result["metric"] == "mae"
    assert result["ranking"][-1]["setting"] == {"lambda_": 0.9}
    lines = [json.loads(line) for line in (tmp_path / "s" / LINES).read_text().splitlines()]
    assert [line["failed"] is not None for line in lines] == [True, False]


def test_sweep_scores_only_the_chosen_setting_on_test_faces_and_resumes(tmp_path, monkeypatch):
    base = RunConfig.from_options("smoke", distiller="kd", occlusion="mask", teacher_epochs=1, student_epochs=1,
                                  dataset_args=SMALL)
    scored = []
    real_score = ProtocolRun.score

    def score(self):
        scored.append(self.cfg)
        return real_score(self)

    monkeypatch.setattr(ProtocolRun, "score", score)
    cache, out = ModelCache(tmp_path / "cache"), tmp_path / "sweep"
    result = run_sweep(base, {"lambda_": [0.1, 0.9]}, [0, 1], out, NullReporter(), cache, command="cmd")
    lines = [json.loads(line) for line in (out / LINES).read_text().splitlines()]
    assert len(lines) == 4 and all("student" not in line and "val_occluded" in line for line in lines)
    means = {r["label"]: r["val_occluded_mean"] for r in result["ranking"]}
    assert result["chosen"]["label"] == max(means, key=means.get)
    chosen = result["chosen"]["setting"]["lambda_"]
    assert [c.distiller_args["lambda_"] for c in scored] == [chosen, chosen] and [c.seed for c in scored] == [0, 1]
    assert set(result["test"]) == {"0", "1"} and json.loads((out / CHOSEN).read_text())["chosen"] == result["chosen"]
    assert "| 1 | lambda=" in (out / "summary.md").read_text() and not (out / ".resume").exists()
    # a rerun trains nothing: every line is there
    monkeypatch.setattr("occlusion_distill.protocol.pipeline.fit", lambda *a, **k: pytest.fail("trained again"))
    again = run_sweep(base, {"lambda_": [0.1, 0.9]}, [0, 1], out, NullReporter(), cache, command="cmd")
    assert again["chosen"] == result["chosen"]


def test_a_sweep_refuses_a_bad_option_before_training(tmp_path):
    base = RunConfig.from_options("smoke", distiller="kd", dataset_args=SMALL)
    with pytest.raises(UsageError, match="lamda"):
        run_sweep(base, {"lamda": [0.1]}, [0], tmp_path / "s", NullReporter(), ModelCache(tmp_path / "c"))
    assert not (tmp_path / "s").exists()
    with pytest.raises(UsageError, match="needs the run cache"):
        run_sweep(base, {"lambda_": [0.1]}, [0], tmp_path / "s", NullReporter(), ModelCache(None))


def test_sweep_command_line(cli, tmp_path):
    small = [a for k, v in SMALL.items() for a in ("--dataset-arg", f"{k}={v}")]
    res = cli("bench", "sweep", "--grid", "tau=2,4", "--seeds", "0", "--out", tmp_path / "s", "--quiet", "--",
              "--preset", "smoke", "--epochs", "1", *small)
    assert res.returncode == 0, res.stderr
    chosen = json.loads((tmp_path / "s" / CHOSEN).read_text())
    assert chosen["command"].startswith("occdistill bench sweep --grid tau=2,4 --seeds 0 --out ")
    # the run options after "--" too: the command remakes the sweep
    assert chosen["command"].endswith(" -- --preset smoke --epochs 1 " + " ".join(small))
    res = run_main("bench", "sweep", "--grid", "tau=2", "--out", tmp_path / "t", "--", "--seed", "3",
              f"--cache-dir={tmp_path}")
    assert res.returncode == 2 and "drop --cache-dir, --seed" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("where, in_training", [("teacher", True), ("teacher", False), ("preflight", False)],
                         ids=["in-training", "elsewhere-in-a-run", "while-checking"])
def test_ctrl_c_in_a_sweep_says_what_is_kept_and_how_to_continue(tmp_path, monkeypatch, capsys, where, in_training):
    from occlusion_distill.cli import main
    from occlusion_distill.errors import Interrupted

    def interrupted(self):
        # the trainer's first Ctrl-C says where its stage stopped; a second one, or one outside training, is bare
        raise Interrupted("interrupted in stage 'teacher' at epoch 1, step 3; the last checkpoint is kept in x") \
            if in_training else KeyboardInterrupt

    monkeypatch.setattr(ProtocolRun, where, interrupted)
    small = [a for k, v in SMALL.items() for a in ("--dataset-arg", f"{k}={v}")]
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "sweep", "--grid", "tau=2,4", "--out", str(tmp_path / "s"), "--cache-dir",
              str(tmp_path / "c"), "--quiet", "--", "--preset", "smoke", *small])
    assert exit_info.value.code == 130
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("occdistill: error: interrupted"), err
    assert "no setting had finished training" in err and "rerun the same command" in err
    assert "aborted" not in err.lower()
    assert ("at epoch 1, step 3" in err) == in_training
