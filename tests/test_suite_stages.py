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
