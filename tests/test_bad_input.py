"""The bad-input matrix: every user mistake ends in one documented line and exit code, and leaves no
half-written file (exit codes: 2 bad usage, 3 bad data, 4 failure during a run; see docs/errors.md)."""

import os
import stat
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from occlusion_distill.cli import main
from occlusion_distill.distillers import Distiller
from occlusion_distill.registry import registry

from conftest import run_cli
from test_registry import make_distribution

IMG = np.random.default_rng(0).integers(0, 255, (64, 64, 3)).astype(np.uint8)


def _folder(root, write):
    for cls in ("happy", "sad"):
        (root / cls).mkdir(parents=True)
        for i in range(4):
            write(root / cls, i)
    return root


def truncated_jpegs(tmp):
    jpg = cv2.imencode(".jpg", IMG)[1].tobytes()
    return _folder(tmp / "src", lambda d, i: (d / f"{i}.jpg").write_bytes(jpg[:200]))


def corrupt_pngs(tmp):
    return _folder(tmp / "src", lambda d, i: (d / f"{i}.png").write_bytes(os.urandom(400)))


def unwritable_dir(tmp):
    """A directory this process cannot write into. A user is stopped by its mode; root is not, so root gets
    its own process directory under /proc instead, which the kernel keeps read-only for everyone."""
    ro = tmp / "ro"
    ro.mkdir()
    os.chmod(ro, stat.S_IRUSR | stat.S_IXUSR)
    if os.access(ro, os.W_OK):
        ro = Path("/proc/self")
    assert ro.is_dir() and not os.access(ro, os.W_OK)
    return ro


def csv_file(text):
    def make(tmp):
        cv2.imwrite(str(tmp / "a.png"), IMG)
        (tmp / "faces.csv").write_text(text)
        return tmp / "faces.csv"
    return make


def empty_folder(tmp):
    (tmp / "src").mkdir()
    return tmp / "src"


class NaNAtStep3(Distiller):
    """The loss becomes NaN at the third step."""

    uses_teacher = False

    def __init__(self, task):
        super().__init__(task)
        self.steps = 0

    def forward(self, student, targets, teacher=None):
        self.steps += 1
        loss = self.task.loss(student.logits, targets)
        return {"loss": loss * float("nan") if self.steps >= 3 else loss}


class Exploding(Distiller):
    """Raises on its first step."""

    def forward(self, student, targets, teacher=None):
        raise RuntimeError("kaboom")


SMOKE = ["--preset", "smoke", "--epochs", "1", "--quiet"]

# name: (source maker or None, command builder, exit code, fragments of the one error line)
CASES = {
    "data path that does not exist": (None, lambda t, s: ["run", "--dataset", "ferplus", "--data", t / "nowhere",
                                                         *SMOKE, "--out", t / "out"], 2, ["does not exist"]),
    "empty source folder": (empty_folder, lambda t, s: ["data", "prepare", "folder", "--source", s, "--quiet", "--out", t / "out"],
                            3, ["no class folders"]),
    "truncated images only": (truncated_jpegs, lambda t, s: ["data", "prepare", "folder", "--source", s, "--quiet", "--out",
                                                             t / "out", "--landmarks", "template"], 3,
                              ["no usable faces", "does not decode"]),
    "corrupt images only": (corrupt_pngs, lambda t, s: ["data", "prepare", "folder", "--source", s, "--quiet", "--out", t / "out",
                                                        "--landmarks", "template"], 3, ["no usable faces"]),
    "wrong CSV columns": (csv_file("file,label\na.png,happy\n"),
                          lambda t, s: ["data", "prepare", "csv", "--source", s, "--quiet", "--out", t / "out"], 3,
                          ["needs a 'path' column", "file, label"]),
    "labels out of range": (csv_file("path,expression\na.png,-1\na.png,-2\n"),
                            lambda t, s: ["data", "prepare", "csv", "--source", s, "--quiet", "--out", t / "out"], 3,
                            ["no usable rows"]),
    "negative ages": (csv_file("path,age\na.png,-3\na.png,-10\n"),
                      lambda t, s: ["data", "prepare", "csv", "--source", s, "--quiet", "--out", t / "out"], 3,
                      ["no usable rows"]),
    "unknown occlusion": (None, lambda t, s: ["run", "--occlusion", "sunglases", *SMOKE, "--out", t / "out"], 2,
                          ["unknown occlusion 'sunglases'"]),
    "unknown distiller option": (None, lambda t, s: ["run", "--distiller-arg", "tua=3", *SMOKE, "--out", t / "out"],
                                 2, ["tua"]),
    "image size too small": (None, lambda t, s: ["run", "--image-size", "16", *SMOKE, "--out", t / "out"], 2,
                             ["too small"]),
    "existing run directory": (lambda t: (t / "out").mkdir() or (t / "out" / "x").write_text("x"),
                               lambda t, s: ["run", *SMOKE, "--out", t / "out"], 2, ["already exists"]),
    "read-only output directory": (unwritable_dir, lambda t, s: ["run", *SMOKE, "--out", s / "run" / "out"], 2,
                                   ["not writable"]),
    "pickled (not weights-only) weights": (
        lambda t: torch.save({"w": torch.zeros(1), "obj": Exploding}, t / "w.pt"),
        lambda t, s: ["run", *SMOKE, "--weights", t / "w.pt", "--out", t / "out"], 2, ["not a weights-only file"]),
    "cache directory that is a file": (lambda t: (t / "cache").write_text("x"),
                                       lambda t, s: ["run", *SMOKE, "--cache-dir", t / "cache", "--out", t / "out"], 2,
                                       ["is a file, not a directory"]),
    "resume with nothing to resume": (None, lambda t, s: ["run", "--resume", t / "out"], 2,
                                      ["no interrupted run to resume"]),
    "plugin that raises during a run": (None, lambda t, s: ["run", "--distiller", "exploding", *SMOKE,
                                                            "--out", t / "out"], 4,
                                        ["distiller 'exploding' from tests", "kaboom"]),
    "NaN loss": (None, lambda t, s: ["run", "--distiller", "nan-at-3", *SMOKE, "--out", t / "out"], 4,
                 ["the loss became nan", "step 3", "lower learning rate"]),
    "bench suite with an unknown plugin": (
        lambda t: (t / "s.yaml").write_text("seeds: [0]\ndistillers: [kd]\nexperiments:\n  - dataset: synthfaces\n"
                                            "    tasks: [expression]\n    occlusions: [mask, sunglases]\n"),
        lambda t, s: ["bench", "run", "--suite", t / "s.yaml", "--out", t / "out"], 2,
        ["cell synthfaces/expression/sunglases/kd", "field 'occlusion'"]),
}


@pytest.fixture
def test_plugins():
    registry("distillers").add("exploding", Exploding, origin="tests")
    registry("distillers").add("nan-at-3", NaNAtStep3, origin="tests")
    yield
    registry("distillers").unregister("exploding")
    registry("distillers").unregister("nan-at-3")


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_matrix(case, tmp_path, tmp_path_factory, monkeypatch, capsys, test_plugins):
    make, command, code, fragments = CASES[case]
    # a cache of its own: whether a failing run keeps a partial directory depends on whether it trained a
    # stage itself, not on what an earlier test on this worker left in a shared cache
    monkeypatch.setenv("OCCDISTILL_CACHE", str(tmp_path_factory.mktemp("cache")))
    source = make(tmp_path) if make else None
    before = {p for p in tmp_path.rglob("*")}
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in command(tmp_path, source)])
    err = capsys.readouterr().err
    assert exit_info.value.code == code, err
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("occdistill: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    after = {p for p in tmp_path.rglob("*")}
    if case in ("NaN loss", "plugin that raises during a run"):
        # the teacher and baseline had finished: they stay in the hidden partial run, for --resume
        partial = tmp_path / ".out.partial"
        assert "continue with: occdistill run --resume" in lines[0]
        assert all(p == partial or partial in p.parents for p in after - before)
        assert (partial / "config.json").is_file() and not (tmp_path / "out").exists()
        return
    assert after == before, f"left behind: {sorted(map(str, after - before))}"


def test_read_only_output_directory_as_a_user(tmp_path):
    """The read-only case for root too: a directory that is a file cannot be written into by anyone."""
    (tmp_path / "file").write_text("x")
    res = run_cli("run", *SMOKE, "--out", tmp_path / "file" / "out")
    assert res.returncode == 2 and "is a file" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_plugin_that_fails_to_import_is_reported_not_fatal(tmp_path):
    make_distribution(tmp_path, "occdistill-broken", "occd_broken_plugin", "raise ImportError('boom')\n",
                      {"occlusion_distill.occlusions": {"broken": "occd_broken_plugin:Nope"}})
    env = {"PYTHONPATH": str(tmp_path) + ":" + ":".join(sys.path)}
    res = run_cli("run", "--occlusion", "broken", *SMOKE, "--out", tmp_path / "out", env=env)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("occdistill: error:")]
    warnings = [line for line in lines if line.startswith("occdistill: warning:")]
    assert len(errors) == 1 and "unknown occlusion 'broken'" in errors[0]
    assert len(warnings) == 1 and "occdistill-broken==1.2.3" in warnings[0] and "boom" in warnings[0]
    assert len(lines) == 2 and not (tmp_path / "out").exists()


def test_nan_loss_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys, test_plugins):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--distiller", "nan-at-3", "--preset", "smoke", "--quiet", "--checkpoint-every", "1",
              "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 4 and "step 3" in err and "occdistill run --resume" in err
    kept = tmp_path / ".out.partial" / "checkpoints" / "resume" / "student.state.pt"
    state = torch.load(kept, weights_only=True)
    assert state["step"] == 2 and all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert not (tmp_path / "out").exists()
