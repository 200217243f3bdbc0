import json

import pytest
import torch

from occlusion_distill import __version__

from conftest import run_main


def _one_line_error(res, *fragments):
    assert res.returncode != 0
    err = res.stderr.strip()
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout
    assert len(err.splitlines()) == 1, err
    assert err.startswith("occdistill: error:")
    for f in fragments:
        assert f in err, err


def test_version(cli):
    res = cli("--version")
    assert res.returncode == 0 and __version__ in res.stdout


@pytest.mark.parametrize("args, fragments, code", [
    (["--task", "agee"], ["unknown task 'agee'", "age"], 2),
    (["--occlusion", "lower_half"], ["unknown occlusion", "lower-half"], 2),
    (["--distiller", "kdd"], ["unknown distiller", "'kd'"], 2),
    (["--backbone", "resnet10tt"], ["unknown backbone", "resnet10t"], 2),
    (["--image-size", "16"], ["image size 16 is too small", "32"], 2),
    (["--weights", "/nonexistent/w.pt"], ["--weights file not found"], 2),
    (["--distiller-arg", "lambda"], ["key=value"], 2),
    (["--distiller-arg", "lambda=3"], ["lambda must be in [0, 1]"], 2),
    (["--distiller-arg", "tau=2", "--distiller-arg", "tau=3"], ["distiller option 'tau' is given twice"], 2),
    (["--occlusion-arg", "fill=blue"], ["fill must be"], 2),
    (["--augment", "rotation=5"], ["unknown option 'rotation'", "did you mean 'rotate'"], 2),
    (["--augment", "scale=0.9"], ["augment: scale must be in [0, 0.5]"], 2),
    (["--augment", "default", "--teacher-outputs", "cached"], ["use --teacher-outputs online"], 2),
    (["--mix", "mixupp"], ["mix must be mixup, cutmix or none"], 2),
    (["--mix", "cutmix=-1"], ["mix: alpha must be in"], 2),
    (["--mix", "mixup", "--teacher-outputs", "cached"], ["--mix mixes the clean faces", "online"], 2),
    (["--no-such-option"], ["No such option"], 2),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, args, fragments, code):
    out = tmp_path / "runs" / "r"
    res = run_main("run", "--preset", "smoke", "--out", out, *args, cwd=tmp_path)
    _one_line_error(res, *fragments)
    assert res.returncode == code
    assert not (tmp_path / "runs").exists()
    assert list(tmp_path.iterdir()) == []


def test_out_pointing_at_a_file(tmp_path):
    target = tmp_path / "taken.txt"
    target.write_text("x")
    res = run_main("run", "--preset", "smoke", "--out", target)
    _one_line_error(res, "is a file")
    assert target.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["taken.txt"]


def test_existing_run_directory_is_refused(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "metrics.json").write_text("{}")
    res = run_main("run", "--preset", "smoke", "--out", tmp_path / "r")
    _one_line_error(res, "already exists", "--overwrite")


def test_pickled_weights_are_refused(tmp_path):
    import argparse

    path = tmp_path / "evil.pt"
    # Any object outside torch's weights-only allow-list stands for pickled code.
    torch.save({"conv.weight": torch.zeros(1), "payload": argparse.Namespace(cmd="rm -rf /")}, path)
    res = run_main("run", "--preset", "smoke", "--weights", path, "--out", tmp_path / "r")
    _one_line_error(res, "not a weights-only file")
    assert not (tmp_path / "r").exists()


def test_weights_of_another_architecture_are_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"fc.weight": torch.zeros(3, 3)}, path)
    res = run_main("run", "--preset", "smoke", "--weights", path, "--out", tmp_path / "r")
    _one_line_error(res, "no parameter")


def test_list_json_every_kind():
    res = run_main("list", "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    for kind in ("occlusions", "tasks", "distillers", "backbones", "datasets"):
        assert data[kind], kind
    res = run_main("list", "tasks", "--json")
    assert set(json.loads(res.stdout)) == {"tasks", "warnings"}
    _one_line_error(run_main("list", "gadgets"), "gadgets")


def test_ctrl_c_in_any_command_is_one_line_saying_interrupted(monkeypatch, capsys):
    from occlusion_distill.cli import main

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    # click turns a Ctrl-C into its Abort; the line must still say what happened, not "aborted"
    monkeypatch.setattr("occlusion_distill.cli.list_plugins", ctrl_c)
    with pytest.raises(SystemExit) as exit_info:
        main(["list"])
    assert exit_info.value.code == 130
    err = capsys.readouterr().err.strip()
    assert err == "occdistill: error: interrupted", err
