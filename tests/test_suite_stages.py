"""The scripts that work on a suite's run cache: benchmarks/suite_stages.py (a stage killed in training continues
from its state when the command is rerun), teacher_score.py and kd_diagnosis.py. The last two read one
`bench run` of a small suite (the module fixture `stored`), so this file runs on one worker
(conftest.ONE_WORKER_FILES)."""

import importlib.util
import signal
import subprocess
import sys
import time

import pytest
import torch

from occlusion_distill.engine.checkpoint import StageCheckpoint

from conftest import ROOT
from test_resume import _wait_for_state

SCRIPT = ROOT / "benchmarks" / "suite_stages.py"
SUITE = """\
name: stages-test
preset: smoke
seeds: [0]
settings: {teacher_epochs: 2, checkpoint_every: 1, dataset_args: {n_train: 300}}
distillers: [kd]
experiments:
  - {dataset: synthfaces, tasks: [expression], occlusions: [mask]}
"""
CELL = "synthfaces/expression/mask/kd"
_spec = importlib.util.spec_from_file_location("suite_stages", SCRIPT)
suite_stages = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(suite_stages)


def _args(tmp_path, cache):
    return [str(tmp_path / "suite.yaml"), str(tmp_path), str(cache), CELL, "0", "teacher"]


def _teacher(cache):
    (path,) = (cache / "teachers").glob("*.pt")
    return torch.load(path, map_location="cpu", weights_only=True)


def test_a_killed_stage_resumes_from_its_state_and_matches_an_unbroken_one(tmp_path, monkeypatch):
    (tmp_path / "suite.yaml").write_text(SUITE)
    assert suite_stages.main(_args(tmp_path, tmp_path / "ref")) == 0  # in this process: no second start-up

    cache = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, str(SCRIPT), *_args(tmp_path, cache)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    # the state's directory is named by the config's digest: wait for the stage's first save
    found = []
    while not found and proc.poll() is None:
        found = list((cache / "stage-states").glob("*/resume/teacher.state.pt"))
        time.sleep(0.05)
    assert found, f"the stage ended before saving a state: {proc.stderr.read()}"
    # the second epoch, part-way
    _wait_for_state(proc, found[0], lambda s: s["epoch"] == 1 and s["batch"] > 0)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (cache / "teachers").exists() or not any((cache / "teachers").iterdir())

    loaded = []  # a retrain from scratch would match the unbroken run too: see that the state was read
    original = StageCheckpoint.load
    monkeypatch.setattr(StageCheckpoint, "load", lambda self: loaded.append(original(self)) or loaded[-1])
    assert suite_stages.main(_args(tmp_path, cache)) == 0
    assert [state["epoch"] for state in loaded if state is not None] == [1]
    assert not any((cache / "stage-states").iterdir())  # the states go once the stage is in the cache
    a, b = _teacher(tmp_path / "ref"), _teacher(cache)
    assert a["history"] == b["history"]
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A suite of `finetune` and `kd` run once by `bench run`: its run cache holds the teacher and both
    students, its results lines name them. The scripts below read them; a test that changes them copies them."""
    from conftest import run_main

    root = tmp_path_factory.mktemp("stored")
    suite, cache, out = root / "suite.yaml", root / "cache", root / "results"
    # models that learn (about 24-40% on 7 classes), so that what the scripts compute says something
    suite.write_text(SUITE.replace("[kd]", "[finetune, kd]").replace("teacher_epochs: 2", "teacher_epochs: 4")
                     .replace("n_train: 300", "n_train: 1000"))
    res = run_main("bench", "run", "--suite", suite, "--data-root", root, "--cache-dir", cache, "--out", out, "--quiet")
    assert res.returncode == 0, res.stderr
    return suite, cache, out


def _script(name, monkeypatch):
    """A benchmark script loaded as a module. Its ``from suite_stages import ...`` gets this file's
    ``suite_stages``, so that a patch of it reaches the script, and no other copy stays in sys.modules."""
    monkeypatch.setitem(sys.modules, "suite_stages", suite_stages)
    spec = importlib.util.spec_from_file_location(name, SCRIPT.parent / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_teacher_score_tells_the_teacher_of_the_results_lines_from_another(stored, tmp_path, monkeypatch, capsys):
    import json
    import shutil

    from occlusion_distill.errors import UsageError

    teacher_score = _script("teacher_score", monkeypatch)
    suite, cache, results = stored
    out = tmp_path / "results"
    shutil.copytree(results, out)  # its lines are changed below
    cell = CELL.replace("/kd", "/finetune")
    args = [str(suite), str(suite.parent), str(cache), cell, "0", str(out)]
    capsys.readouterr()
    assert teacher_score.main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["same_teacher"] and report["retrained"] == report["results_line"]

    lines = (out / "results.jsonl").read_text().splitlines()
    other = json.loads(lines[0])
    other["all_metrics"]["teacher_clean"]["accuracy"] += 1e-9  # one digit off: another teacher
    (out / "results.jsonl").write_text(json.dumps(other) + "\n")
    assert teacher_score.main(args) == 1
    with monkeypatch.context() as patched:  # refused before anything is loaded
        patched.setattr(teacher_score, "ProtocolRun", lambda *a, **k: pytest.fail("loaded before refusing"))
        with pytest.raises(UsageError, match="SEED must be a whole number"):
            teacher_score.main([*args[:4], "one", args[5]])
        with pytest.raises(UsageError, match="no line of synthfaces/expression seed 1"):
            teacher_score.main([*args[:4], "1", args[5]])
        (out / "results.jsonl").write_text(lines[0] + "\n" + json.dumps({**other, "cell": "x"}) + "\n")
        with pytest.raises(UsageError, match="2 different teachers"):
            teacher_score.main(args)
    (out / "results.jsonl").write_text(lines[0] + "\n")
    with pytest.raises(UsageError, match="holds no teacher"):
        teacher_score.main([args[0], args[1], str(tmp_path / "empty"), *args[3:]])


def test_the_scripts_refuse_bad_arguments_in_one_line_before_loading_anything(tmp_path, monkeypatch, capsys):
    from occlusion_distill.errors import DataError, UsageError

    teacher_score, kd_diagnosis = _script("teacher_score", monkeypatch), _script("kd_diagnosis", monkeypatch)
    (tmp_path / "suite.yaml").write_text(SUITE)
    args = _args(tmp_path, tmp_path / "cache")
    for module, loads in ((suite_stages, "ProtocolRun"), (teacher_score, "ProtocolRun"), (kd_diagnosis, "StoredModels")):
        monkeypatch.setattr(module, loads, lambda *a, **k: pytest.fail("loaded before refusing"))
    for bad in (args[:5], [*args[:5], "teachers"], [*args[:5], "teacher", "pupil"]):
        assert suite_stages.main(bad) == 2
        assert capsys.readouterr().err == suite_stages.USAGE + "\n"
    with pytest.raises(UsageError, match="SEED must be a whole number, not 'zero'"):
        suite_stages.main([*args[:4], "zero", "teacher"])
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match="is a file, not a directory"):
        suite_stages.main([*args[:2], str(tmp_path / "file"), *args[3:]])
    with pytest.raises(UsageError, match="has no cell synthfaces/expression/mask/triplet; it has: " + CELL):
        suite_stages.main([*args[:3], CELL.replace("kd", "triplet"), "0", "teacher"])
    for script in (teacher_score, kd_diagnosis):
        for bad in (args[:5], [*args[:5], "out", "extra"]):
            assert script.main(bad) == 2
            assert capsys.readouterr().err == script.USAGE + "\n"
        with pytest.raises(UsageError, match="SEED must be a whole number, not '²'"):  # a digit to isdigit()
            script.main([*args[:4], "²", str(tmp_path / "out")])
    with pytest.raises(UsageError, match="is a directory"):
        kd_diagnosis.main([*args[:5], str(tmp_path)])

    # script(): bad input is one line and the error's own exit code; the return value of main is the exit code
    def raising(argv):
        raise DataError(f"no prepared data at {argv[0]}")

    monkeypatch.setattr(sys, "argv", ["x.py", "here"])
    for main, code, err in ((raising, DataError("").exit_code, "x.py: error: no prepared data at here\n"),
                            (lambda argv: 1, 1, ""), (lambda argv: 0, 0, "")):
        with pytest.raises(SystemExit) as stop:
            suite_stages.script(main, "x.py")
        assert stop.value.code == code and capsys.readouterr().err == err


def test_kd_diagnosis_reads_the_suites_models_and_agrees_with_their_validation(stored, tmp_path, monkeypatch,
                                                                             capsys):
    import json
    import shutil

    kd_diagnosis = _script("kd_diagnosis", monkeypatch)
    suite, cache, _ = stored
    out = tmp_path / "diagnosis.json"
    args = [str(suite), str(suite.parent), str(cache), CELL, "0", str(out)]
    assert kd_diagnosis.main([*args[:2], str(tmp_path / "empty"), *args[3:]]) == 2
    assert "teacher is not in" in capsys.readouterr().err
    models = {}  # the stored models by name, with the best validation score of each
    for kind in ("teachers", "students"):
        for path in (cache / kind).glob("*.pt"):
            blob = torch.load(path, map_location="cpu", weights_only=True)
            name = "teacher" if kind == "teachers" else json.loads(blob["key"])["distiller"]
            models[name] = path, max(epoch["val_accuracy"] for epoch in json.loads(blob["history"]))
    assert set(models) == {"teacher", "finetune", "kd"} and min(score for _, score in models.values()) > 20  # chance: 14%
    without_kd = tmp_path / "cache"
    shutil.copytree(cache, without_kd)
    (without_kd / "students" / models["kd"][0].name).unlink()
    assert kd_diagnosis.main([*args[:2], str(without_kd), *args[3:]]) == 2  # it never trains a missing stage
    assert "stage 'student' of seed 0 is not in" in capsys.readouterr().err and not out.exists()
    assert not (without_kd / "students" / models["kd"][0].name).exists()

    assert kd_diagnosis.main(args) == 0
    result = json.loads(out.read_text())
    # the validation faces are the ones each stage chose its epoch on: its best score there, recomputed
    assert result["teacher_clean"]["val"]["accuracy"] == pytest.approx(models["teacher"][1], abs=0.006)
    for name in ("finetune", "kd"):
        assert result[f"{name}_occluded"]["val"]["accuracy"] == pytest.approx(models[name][1], abs=0.006)
        for split in ("train", "val"):
            assert set(result[f"{name}_vs_teacher"][split]) == {"kl_teacher_student_at_tau", "top1_agreement"}
