"""benchmarks/suite_stages.py: a stage killed in training continues from its state when the command is rerun."""

import importlib.util
import signal
import subprocess
import sys
import time

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


def test_teacher_score_tells_the_teacher_of_the_results_lines_from_another(tmp_path, monkeypatch, capsys):
    import json

    import pytest

    from occlusion_distill.errors import UsageError

    from conftest import run_main

    monkeypatch.syspath_prepend(str(SCRIPT.parent))  # its sibling import of suite_stages, as on the command line
    spec = importlib.util.spec_from_file_location("teacher_score", SCRIPT.parent / "teacher_score.py")
    teacher_score = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(teacher_score)
    suite, cache, out = tmp_path / "suite.yaml", tmp_path / "cache", tmp_path / "out"
    suite.write_text(SUITE.replace("[kd]", "[finetune]"))  # the teacher and one student: the least to score
    cell = CELL.replace("/kd", "/finetune")
    res = run_main("bench", "run", "--suite", suite, "--data-root", tmp_path, "--cache-dir", cache, "--out", out,
                   "--quiet")
    assert res.returncode == 0, res.stderr
    args = [str(suite), str(tmp_path), str(cache), cell, "0", str(out)]
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
    import pytest

    from occlusion_distill.errors import DataError, UsageError

    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("teacher_score", SCRIPT.parent / "teacher_score.py")
    teacher_score = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(teacher_score)
    (tmp_path / "suite.yaml").write_text(SUITE)
    args = _args(tmp_path, tmp_path / "cache")
    monkeypatch.setattr(suite_stages, "ProtocolRun", lambda *a, **k: pytest.fail("loaded before refusing"))
    for bad in (args[:5], [*args[:5], "teachers"], [*args[:5], "teacher", "pupil"]):
        assert suite_stages.main(bad) == 2
        assert capsys.readouterr().err == suite_stages.USAGE + "\n"
    with pytest.raises(UsageError, match="SEED must be a whole number, not 'zero'"):
        suite_stages.main([*args[:4], "zero", "teacher"])
    with pytest.raises(UsageError, match="has no cell synthfaces/expression/mask/triplet; it has: " + CELL):
        suite_stages.main([*args[:3], CELL.replace("kd", "triplet"), "0", "teacher"])
    for bad in (args[:5], [*args[:5], "out", "extra"]):
        assert teacher_score.main(bad) == 2
        assert capsys.readouterr().err == teacher_score.USAGE + "\n"

    # script(): bad input is one line and the error's own exit code; the return value of main is the exit code
    def raising(argv):
        raise DataError(f"no prepared data at {argv[0]}")

    monkeypatch.setattr(sys, "argv", ["x.py", "here"])
    for main, code, err in ((raising, DataError("").exit_code, "x.py: error: no prepared data at here\n"),
                            (lambda argv: 1, 1, ""), (lambda argv: 0, 0, "")):
        with pytest.raises(SystemExit) as stop:
            suite_stages.script(main, "x.py")
        assert stop.value.code == code and capsys.readouterr().err == err
