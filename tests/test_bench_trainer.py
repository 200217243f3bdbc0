"""``bench trainer``: the JSON it writes, at sizes small enough for the tests (the figure is in docs/)."""

import json

from occlusion_distill.bench.trainer import MIN_STEPS

from conftest import run_main


def test_bench_trainer_json_schema(tmp_path, cli):
    out = tmp_path / "trainer.json"
    res = cli("bench", "trainer", "--faces", "256", "--epochs", "2", "--rounds", "1", "--image-size", "32",
              "--quiet", "--json", out)
    assert res.returncode == 0, res.stderr
    assert "images/s" in res.stdout and "x (" in res.stdout
    r = json.loads(out.read_text())
    rate, setup = r["images_per_second"], r["setup"]
    assert set(rate) == {"trainer", "bare"} and all(v > 0 for v in rate.values())
    assert abs(r["ratio"] - rate["trainer"] / rate["bare"]) < 0.01
    # both sides train the same number of steps on the same batches; validation is timed apart
    assert setup["steps"] == {"trainer": 8, "bare": 8} and setup["faces"] == 256 and setup["image_size"] == 32
    assert setup["validation_timed_apart"] and r["seconds"]["trainer_validation"] > 0
    assert len(r["rounds"]) == 1 and setup["criterion"] == "finetune"


def test_bench_trainer_refuses_too_few_steps():
    res = run_main("bench", "trainer", "--faces", "256", "--epochs", "1", "--quiet")
    assert res.returncode == 2 and f"needs at least {MIN_STEPS}" in res.stderr and "Traceback" not in res.stderr
