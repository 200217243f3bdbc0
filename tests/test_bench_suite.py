"""Benchmark suites: the smoke suite end to end, resuming after a kill, bad suite files, the statistics."""

import csv
import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from occlusion_distill.bench.results import (RESULTS, SUITE_META, collect, config_digest, read_meta, read_results,
                                             write_results)
from occlusion_distill.bench.runner import check_suite, selected_runs
from occlusion_distill.bench.stats import paired_t, t_two_sided_p
from occlusion_distill.bench.suite import SuiteError, load_suite
from occlusion_distill.bench.summary import _groups, csv_text, markdown
from occlusion_distill.config import RunConfig
from occlusion_distill.cli import main
from occlusion_distill.errors import Interrupted

from conftest import ROOT, run_cli, run_main

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The committed smoke suite, run once through the command line as CI runs it."""
    base = tmp_path_factory.mktemp("smoke")
    out, cache = base / "out", base / "cache"
    res = run_cli("bench", "run", "--suite", "smoke", "--out", out, "--cache-dir", cache, "--quiet", cwd=ROOT,
                  timeout=900)
    assert res.returncode == 0, res.stderr
    return out, cache, res


def test_smoke_suite_summary_has_every_cell(smoke):
    out, _, _ = smoke
    suite = load_suite(str(ROOT / "benchmarks" / "suites" / "smoke.yaml"))
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == len(suite.cells) * len(suite.seeds)
    assert {(r["cell"], r["seed"]) for r in rows} == {(c.id, s) for c in suite.cells for s in suite.seeds}
    for r in rows:  # provenance on every line, and what the per-face tests read
        assert r["versions"]["torch"] and r["device"] == "cpu" and r["wall_seconds"] > 0
        assert r["config"]["seed"] == r["seed"] and "git_commit" in r
        assert set(r["per_face"]) == {"student"} and r["per_face"]["student"]["n"] == r["n_test"]
        # every stage's validation history, also of stages found in the run cache
        histories, cfg = r["histories"], r["config"]
        assert {"teacher", "baseline", "student"} <= set(histories)
        assert len(histories["teacher"]) == cfg["teacher_epochs"] and len(histories["baseline"]) == cfg["student_epochs"]
        assert all(epoch["epoch"] == i + 1 for h in histories.values() for i, epoch in enumerate(h))
    assert any(r["reused_from_cache"]["teacher"] for r in rows)  # so the check above covers a stored stage
    table = list(csv.DictReader(open(out / "summary.csv")))
    assert {(r["dataset"], r["task"], r["occlusion"], r["label"]) for r in table} == \
        {(c.dataset, c.task, c.occlusion, c.distiller.tag) for c in suite.cells}
    assert all(int(r["n_seeds"]) == len(suite.seeds) for r in table)
    for r in table:
        if r["distiller"] != "finetune":
            assert r["p"] == "" or 0.0 <= float(r["p"]) <= 1.0
    md = (out / "summary.md").read_text()
    for c in suite.cells:
        assert f"| {c.occlusion} |" in md and f" {c.distiller.tag} |" in md
    assert "Incomplete cells" not in md
    plots = sorted(p.name for p in (out / "plots").iterdir())
    assert plots == ["gap-closed.png", "synthfaces-age.png", "synthfaces-expression.png"]
    assert all((out / "plots" / p).read_bytes()[:8] == PNG for p in plots)


def test_rerun_skips_finished_cells_and_report_rebuilds(smoke, tmp_path):
    out, cache, _ = smoke
    before = (out / "results.jsonl").read_bytes()
    res = run_cli("bench", "run", "--suite", "smoke", "--out", out, "--cache-dir", cache, cwd=ROOT)
    assert res.returncode == 2 and "--resume" in res.stderr and "--overwrite" in res.stderr
    # a kill after a run's line was written but before its checkpoints were removed leaves them behind
    row = json.loads(before.decode().splitlines()[0])
    left = out / ".resume" / f"{row['cell'].replace('/', '-')}-s{row['seed']}-{row['config_digest']}" / "resume"
    left.mkdir(parents=True)
    res = run_cli("bench", "run", "--suite", "smoke", "--out", out, "--cache-dir", cache, "--resume", cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert "16 already in" in res.stderr and "0 to run" in res.stderr
    assert (out / "results.jsonl").read_bytes() == before
    assert not (out / ".resume").exists()
    csv_before = (out / "summary.csv").read_text()
    (out / "summary.csv").unlink()
    for p in (out / "plots").iterdir():
        p.unlink()
    res = run_cli("bench", "report", out)
    assert res.returncode == 0, res.stderr
    assert (out / "summary.csv").read_text() == csv_before
    assert len(list((out / "plots").iterdir())) == 3


def _tiny_suite(path: Path) -> Path:
    path.write_text("name: tiny\npreset: smoke\nseeds: [0, 1]\ndistillers: [finetune, kd]\n"
                    "settings: {teacher_epochs: 2, student_epochs: 1}\n"
                    "experiments:\n  - dataset: synthfaces\n    tasks: [expression]\n    occlusions: [mask]\n")
    return path


def test_killed_suite_resumes_without_recomputing(tmp_path):
    """SIGKILL while a later cell trains; the rerun keeps the finished lines as they were and runs the rest."""
    suite = _tiny_suite(tmp_path / "tiny.yaml")
    out, cache = tmp_path / "out", tmp_path / "cache"
    cmd = [sys.executable, "-m", "occlusion_distill", "bench", "run", "--suite", suite, "--out", out,
           "--cache-dir", cache, "--quiet"]
    proc = subprocess.Popen(list(map(str, cmd)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = out / "results.jsonl"
    deadline = time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None:
            if results.is_file() and results.read_text().count("\n") >= 1:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the suite finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    finished = results.read_text().splitlines()
    assert 1 <= len(finished) < 4
    res = run_cli("bench", "run", "--suite", suite, "--out", out, "--cache-dir", cache, "--resume", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert f"{len(finished)} already in" in res.stderr and f"{4 - len(finished)} to run" in res.stderr
    after = results.read_text().splitlines()
    assert len(after) == 4 and after[:len(finished)] == finished  # same lines: same timestamps, same scores
    assert (out / "summary.md").is_file()
    assert not (out / ".resume").exists()  # the killed run's stage checkpoints, used and removed


BAD = {  # suite text, fragments of the one-line error, the SuiteError's field
    "unknown-occlusion": ("seeds: [0]\ndistillers: [kd]\nexperiments:\n  - dataset: synthfaces\n    tasks: [expression]\n"
                          "    occlusions: [mask, sunglassez]\n",
                          ["cell synthfaces/expression/sunglassez/kd", "field 'occlusion'", "unknown occlusion"],
                          "occlusion"),
    "unknown-distiller": ("seeds: [0]\ndistillers: [finetune, kdd]\nexperiments:\n  - dataset: synthfaces\n"
                          "    tasks: [expression]\n    occlusions: [mask]\n",
                          ["cell synthfaces/expression/mask/kdd", "field 'distiller'"], "distiller"),
    "missing-field": ("seeds: [0]\ndistillers: [kd]\nexperiments:\n  - dataset: synthfaces\n    tasks: [expression]\n",
                      ["experiments[0] (synthfaces)", "missing field 'occlusions'"], "occlusions"),
    "missing-seeds": ("distillers: [kd]\nexperiments:\n  - dataset: synthfaces\n    tasks: [age]\n    occlusions: [mask]\n",
                      ["missing field 'seeds'"], "seeds"),
    "not-prepared": ("seeds: [0]\ndistillers: [kd]\nexperiments:\n  - dataset: ferplus\n    data: nowhere/ferplus\n"
                     "    tasks: [expression]\n    occlusions: [mask]\n",
                     ["cell ferplus/expression/mask/kd", "field 'data'", "not prepared"], "data"),
    "bad-option": ("seeds: [0]\ndistillers: [{name: triplet, args: {margn: 0.2}}]\nexperiments:\n"
                   "  - dataset: synthfaces\n    tasks: [expression]\n    occlusions: [mask]\n",
                   ["cell synthfaces/expression/mask/triplet", "field 'distiller'", "margn"], "distiller"),
    "bad-member-option": ("seeds: [0]\ndistillers: [{name: combined, args: {member_args: {kd: {tua: 2}}}}]\n"
                          "experiments:\n  - dataset: synthfaces\n    tasks: [expression]\n    occlusions: [mask]\n",
                          ["cell synthfaces/expression/mask/combined", "field 'distiller'", "'tau'"], "distiller"),
    "bad-setting": ("seeds: [0]\ndistillers: [kd]\nsettings: {epochs: 3}\nexperiments:\n  - dataset: synthfaces\n"
                    "    tasks: [expression]\n    occlusions: [mask]\n", ["settings", "'epochs' is not a run option"],
                    "settings"),
    "wrong-labels": ("seeds: [0]\ndistillers: [kd]\nexperiments:\n  - dataset: synthfaces\n    tasks: [expression, colour]\n"
                     "    occlusions: [mask]\n", ["cell synthfaces/colour/mask/kd", "field 'task'"], "task"),
    "bad-occlusion-option": ("seeds: [0]\ndistillers: [kd]\nsettings: {occlusion_args: {colour: 3}}\nexperiments:\n"
                             "  - dataset: synthfaces\n    tasks: [expression]\n    occlusions: [mask]\n",
                             ["cell synthfaces/expression/mask/kd", "field 'occlusion'", "colour"], "occlusion"),
    "bad-backbone": ("seeds: [0]\ndistillers: [kd]\nsettings: {backbone: resnet-1}\nexperiments:\n"
                     "  - dataset: synthfaces\n    tasks: [expression]\n    occlusions: [mask]\n",
                     ["cell synthfaces/expression/mask/kd", "field 'backbone'", "resnet-1"], "backbone"),
    "unknown-top-field": ("seeds: [0]\nseed: 1\ndistillers: [kd]\nexperiments: []\n", ["unknown field(s) 'seed'"],
                          "seed"),
    "not-yaml": ("seeds: [0\n", ["not valid YAML"], None),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_suite_fails_before_training(tmp_path, monkeypatch, capsys, name):
    text, fragments, _ = BAD[name]
    suite = tmp_path / f"{name}.yaml"
    suite.write_text(text)
    out = tmp_path / "out"
    monkeypatch.chdir(tmp_path)  # in-process (fast); the exit code and stderr are the command's
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "run", "--suite", str(suite), "--out", str(out)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("occdistill: error: suite") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err
    assert not out.exists()  # nothing trained, nothing written


@pytest.mark.parametrize("name", sorted(BAD))
def test_suite_errors_carry_their_field(tmp_path, name):
    """The field comes from where it was checked, not from the message: the same error, in the library."""
    text, _, field = BAD[name]
    suite = tmp_path / f"{name}.yaml"
    suite.write_text(text)
    with pytest.raises(SuiteError) as info:
        check_suite(load_suite(str(suite), tmp_path))
    assert info.value.field == field, str(info.value)


def test_results_round_trip_and_a_cut_line_is_ignored(tmp_path):
    rows = [{"cell": "a/b/c/kd", "seed": 0, "student": 1.5}, {"cell": "a/b/c/kd", "seed": 1, "student": 2.0}]
    write_results(tmp_path, rows)
    assert read_results(tmp_path) == rows and read_meta(tmp_path) == {}
    with open(tmp_path / RESULTS, "a") as f:
        f.write('{"cell": "a/b/c/kd", "se')  # a kill in the middle of a line
    assert read_results(tmp_path) == rows


def test_committed_suite_directory_is_read_as_before():
    """benchmarks/results/quick: every line is recognised by its digest (so --resume skips it) and the
    summary is rebuilt from the same cells, without a run."""
    out = ROOT / "benchmarks" / "results" / "quick"
    rows = read_results(out)
    assert len(rows) == len((out / RESULTS).read_text().splitlines())
    assert all(config_digest(RunConfig.from_dict(r["config"])) == r["config_digest"] for r in rows)
    meta = read_meta(out)
    assert meta["name"] == "quick" and (out / SUITE_META).is_file()
    cells = collect(rows)
    assert [c.group + (c.label,) for c in cells] == [tuple(i.split("/")) for i in meta["cells"]]
    table = list(csv.DictReader(csv_text(cells).splitlines()))
    committed = list(csv.DictReader((out / "summary.csv").read_text().splitlines()))
    assert table == committed


def test_unknown_suite_name_lists_the_known_ones():
    res = run_main("bench", "run", "--suite", "smokey", cwd=ROOT)
    assert res.returncode == 2 and "no suite named 'smokey'" in res.stderr and "quick" in res.stderr


def test_committed_suites_are_well_formed():
    names = sorted(p.stem for p in (ROOT / "benchmarks" / "suites").glob("*.yaml"))
    assert {"smoke", "quick", "paper"} <= set(names)
    for name in names:
        suite = load_suite(str(ROOT / "benchmarks" / "suites" / f"{name}.yaml"))
        assert suite.cells and suite.seeds


def test_suite_options_are_spelt_as_on_the_command_line(tmp_path):
    """``lambda`` in a suite's args is the constructor's ``lambda_``, as with ``--distiller-arg``."""
    suite = tmp_path / "s.yaml"
    suite.write_text("seeds: [0]\ndistillers: [{name: kd, args: {lambda: 1.0, tau: 2}}]\nexperiments:\n"
                     "  - dataset: synthfaces\n    tasks: [expression]\n    occlusions: [mask]\n")
    loaded = load_suite(str(suite), tmp_path)
    check_suite(loaded)
    assert loaded.cells[0].distiller.args == {"lambda_": 1.0, "tau": 2}


def test_quick_suite_covers_the_issue_matrix():
    suite = load_suite(str(ROOT / "benchmarks" / "suites" / "quick.yaml"))
    ids = {c.id for c in suite.cells}
    for occ in ("upper-half", "lower-half", "mask", "vr-headset"):
        for d in ("finetune", "kd", "triplet", "combined"):
            assert f"ferplus/expression/{occ}/{d}" in ids
    for task in ("gender", "age"):
        for occ in ("mask", "vr-headset"):
            assert f"utkface/{task}/{occ}/combined" in ids
    assert suite.seeds == [0, 1, 2]


@pytest.mark.parametrize("df, t", [(1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (9, 2.262), (30, 2.042)])
def test_t_test_matches_the_table_of_critical_values(df, t):
    assert t_two_sided_p(t, df) == pytest.approx(0.05, abs=2e-4)
    assert t_two_sided_p(0.0, df) == 1.0 and t_two_sided_p(-t, df) == t_two_sided_p(t, df)


def test_paired_t_edge_cases():
    assert paired_t([1.0])["p"] is None
    assert paired_t([0.0, 0.0, 0.0])["p"] == 1.0
    assert paired_t([0.5, 0.5, 0.5])["p"] is None  # no spread: the test says nothing
    r = paired_t([1.0, 2.0, 3.0])
    assert r["t"] == pytest.approx(2.0 / (1.0 / math.sqrt(3))) and 0.05 < r["p"] < 0.1  # df 2: 3.46 is not enough
    assert paired_t([1.0, 1.1, 0.9, 1.05])["p"] < 0.001


def _row(cell, seed, distiller, student, *, baseline=70.0, teacher=80.0, hib=True, occ="upper-half"):
    d, t, o, _ = cell.split("/")
    gap = (student - baseline) / (teacher - baseline)
    return {"cell": cell, "seed": seed, "dataset": d, "task": t, "occlusion": o, "distiller": distiller,
            "label": distiller, "metric": "accuracy", "unit": "%", "higher_is_better": hib,
            "teacher_clean": teacher, "teacher_occluded": 50.0, "baseline": baseline, "student": student,
            "gap_closed": gap, "config": {"backbone": "simple-cnn", "image_size": 40, "teacher_epochs": 6,
                                          "student_epochs": 2, "batch_size": 64, "channels": None},
            "n_train": 100, "n_test": 50, "wall_seconds": 10.0, "device": "cpu"}


def test_summary_marks_significant_cells_and_sets_references_beside_ours():
    rows = []
    for seed, base in enumerate((70.0, 71.0, 69.0)):
        rows.append(_row("ferplus/expression/upper-half/finetune", seed, "finetune", base, baseline=base))
        rows.append(_row("ferplus/expression/upper-half/kd", seed, "kd", base + 2.0 + 0.1 * seed, baseline=base))
        rows.append(_row("ferplus/expression/upper-half/combined", seed, "combined", base + (-1, 1, 0.5)[seed],
                         baseline=base))
    cells = collect(rows)
    kd = next(c for c in cells if c.label == "kd")
    combined = next(c for c in cells if c.label == "combined")
    assert kd.significant and kd.better and kd.vs_finetune["mean"] == pytest.approx(2.1)
    assert not combined.significant
    meta = {"name": "t", "references": [{"dataset": "ferplus", "task": "expression", "occlusion": "upper-half",
                                          "source": "the paper", "values": {"teacher_clean": 84.79,
                                                                            "finetune": 81.28, "combined": 82.75}}]}
    md = markdown(cells, rows, meta)
    assert "▲" in md and "41.9%" in md  # the paper's gap closed: (82.75 - 81.28) / (84.79 - 81.28)
    table = list(csv.DictReader(csv_text(cells).splitlines()))
    assert [r["significant"] for r in table] == ["", "True", "False"]


def test_summary_keeps_columns_under_their_headers_when_a_piece_ran_some_cells_only(tmp_path, monkeypatch):
    """A suite run in pieces: upper-half has kd for 3 seeds and triplet for seed 2; mask has triplet alone
    (no kd), on seed 2. Each value stays under its own header, one seed shows no "± 0", and a mean over
    other seeds than its row's finetune says which."""
    rows = []
    for seed, base in enumerate((70.0, 71.0, 69.0)):
        rows.append(_row("ferplus/expression/upper-half/finetune", seed, "finetune", base, baseline=base))
        rows.append(_row("ferplus/expression/upper-half/kd", seed, "kd", base + 1.0, baseline=base))
    rows.append(_row("ferplus/expression/upper-half/triplet", 2, "triplet", 72.5, baseline=69.0))
    rows.append(_row("ferplus/expression/mask/finetune", 2, "finetune", 60.0, baseline=60.0))
    rows.append(_row("ferplus/expression/mask/triplet", 2, "triplet", 61.5, baseline=60.0))
    rows.append(_row("ferplus/expression/mask/combined", 2, "combined", 62.0, baseline=60.0))  # not in upper-half
    md = markdown(collect(rows), rows, {"name": "t"})
    table = [line for line in md.splitlines() if line.startswith("| ")]
    header = table[0].split(" | ")
    cols = {h.strip(" |"): i for i, h in enumerate(header)}
    upper = next(line for line in table if line.startswith("| upper-half |")).split(" | ")
    mask = next(line for line in table if line.startswith("| mask (seed 2) |")).split(" | ")
    assert upper[cols["kd"]] == "71.00 ± 1.00" and upper[cols["triplet"]] == "72.50 (seed 2)"
    assert mask[cols["kd"]] == "–" and mask[cols["triplet"]].strip(" |") == "61.50"
    assert mask[cols["finetune"]] == "60.00" and "±" not in "".join(mask)
    gaps = next(line for line in md.splitlines() if line.startswith("| mask (seed 2) |") and "Δ" in line)
    assert gaps == "| mask (seed 2) | – | 7.5% (Δ +1.50) | 10.0% (Δ +2.00) |"
    assert upper[cols["combined"]].strip(" |") == "–"
    from matplotlib.figure import Figure

    from occlusion_distill.bench.plots import bar_chart
    by_occ = _groups(collect(rows))[("ferplus", "expression")]
    drawn = []
    real_savefig = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: drawn.append(fig) or real_savefig(fig, *a, **k))
    bar_chart(tmp_path / "p.png", "ferplus", "expression", by_occ)  # combined: under mask only
    assert (tmp_path / "p.png").read_bytes()[:8] == PNG
    legend = [t.get_text() for t in drawn[0].axes[0].get_legend().get_texts()]
    assert legend == ["teacher, clean faces", "teacher, occluded", "finetune (baseline)", "kd", "triplet", "combined"]


def test_summary_counts_the_stages_its_wall_time_leaves_out():
    """A stage one of the runs trained is counted in the wall time, whichever run reused it later; only
    stages no run trained (stored by suite_stages.py, say) are named as left out."""
    def row(label, seed, reused):
        r = _row(f"ferplus/expression/mask/{label}", seed, label, 70.0)
        r["reused_from_cache"] = dict(zip(("teacher", "baseline", "student"), reused))
        return r

    # seed 0: kd's run trained the teacher and the baseline, finetune's found both: nothing left out
    inside = [row("kd", 0, (False, False, False)), row("finetune", 0, (True, True, True))]
    assert "leaves out" not in markdown(collect(inside), inside, {"name": "t"})
    # seed 1: every stage came stored
    outside = inside + [row("finetune", 1, (True, True, True)), row("kd", 1, (True, True, True))]
    md = markdown(collect(outside), outside, {"name": "t"})
    assert "leaves out the training of 1 teacher, 1 baseline, 1 distilled student that" in md


def test_per_face_tests_match_hand_computed_p_values():
    import numpy as np

    from occlusion_distill.bench.stats import per_face_test

    # McNemar, exact: 10 faces only the student gets right, 2 only the baseline: 2 P(X <= 2), X ~ B(12, 1/2)
    student = np.array([True] * 10 + [False] * 2 + [True] * 30 + [False] * 5)
    baseline = np.array([False] * 10 + [True] * 2 + [True] * 30 + [False] * 5)
    r = per_face_test("correct", student, baseline)
    assert (r["test"], r["better"], r["worse"]) == ("McNemar", 10, 2)
    assert r["p"] == pytest.approx(2 * (1 + 12 + 66) / 4096)
    assert per_face_test("correct", student, student)["p"] is None
    # Wilcoxon signed-rank, exact: 6 faces, the student's error smaller on every one: 2 / 2**6
    errors = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], np.float32)
    r = per_face_test("abs_error", errors - np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], np.float32), errors)
    assert (r["test"], r["better"], r["worse"]) == ("Wilcoxon", 6, 0) and r["p"] == pytest.approx(2 / 64)
    with pytest.raises(ValueError):
        per_face_test("correct", student[:5], baseline)


def test_per_face_outcomes_round_trip_through_json():
    import numpy as np

    from occlusion_distill.io import pack_per_face, unpack_per_face

    rng = np.random.default_rng(0)
    correct = rng.random(3153) < 0.8
    packed = json.loads(json.dumps(pack_per_face("correct", correct)))
    assert np.array_equal(unpack_per_face(packed), correct) and len(packed["bits"]) < 3153 / 5
    errors = rng.gamma(2.0, 3.0, 4000).astype(np.float32)
    assert np.array_equal(unpack_per_face(json.loads(json.dumps(pack_per_face("abs_error", errors)))), errors)


def test_summary_shows_the_per_face_test_of_each_seed():
    import numpy as np

    from occlusion_distill.io import pack_per_face

    rows = []
    for seed in range(2):
        base = np.array([True] * 40 + [False] * 60)
        kd = base.copy()
        kd[40:40 + 12 + seed] = True  # 12 (13) faces won, 1 lost
        kd[0] = False
        for name, outcome in (("finetune", base), ("kd", kd)):
            row = _row(f"ferplus/expression/upper-half/{name}", seed, name, 100.0 * outcome.mean(), baseline=40.0)
            row["per_face"] = {"student": pack_per_face("correct", outcome)}
            rows.append(row)
    cells = collect(rows)
    kd = next(c for c in cells if c.label == "kd")
    assert [kd.per_face[s]["better"] for s in (0, 1)] == [12, 13] and kd.per_face[0]["worse"] == 1
    md = markdown(cells, rows, {"name": "t"})
    assert "McNemar's exact test" in md and f"seed 0: p = {kd.per_face[0]['p']:.3g} (+12 / −1)" in md
    table = list(csv.DictReader(csv_text(cells).splitlines()))
    assert table[1]["per_face_test"] == "McNemar" and table[1]["per_face_p"].startswith("0:0.00")
    assert table[0]["per_face_p"] == ""  # finetune is not tested against itself


def test_combined_is_set_against_the_ensemble_control():
    rows = []
    for seed, base in enumerate((70.0, 71.0, 69.0)):
        rows.append(_row("ferplus/expression/upper-half/finetune", seed, "finetune", base, baseline=base))
        control = _row("ferplus/expression/upper-half/ensemble-control", seed, "combined", base + 1.0 + 0.1 * seed,
                       baseline=base)
        control["label"], control["config"] = "ensemble-control", {**control["config"],
                                                                   "distiller_args": {"members": "finetune,finetune:1"}}
        rows += [control, _row("ferplus/expression/upper-half/combined", seed, "combined", base + 2.0 + 0.2 * seed,
                               baseline=base)]
        average = _row("ferplus/expression/upper-half/combined-average", seed, "combined", base + 2.0, baseline=base)
        average["label"], average["config"] = "combined-average", {**average["config"],
                                                                   "distiller_args": {"combine": "average"}}
        rows.append(average)
    cells = collect(rows)
    assert cells[3].vs_control is None  # an average is set against an average control only
    control, combined = cells[1], cells[2]
    assert control.is_ensemble_control and not combined.is_ensemble_control and control.vs_control is None
    assert combined.vs_control["control"] == "ensemble-control"
    assert combined.vs_control["mean"] == pytest.approx(1.1) and combined.vs_control["seeds"] == [0, 1, 2]
    md = markdown(cells, rows, {"name": "t"})
    assert "Against the ensemble control" in md and "| upper-half | combined | ensemble-control | +1.10, p = " in md


def test_a_results_line_names_the_processor_and_the_vector_instructions_its_kernels_use(monkeypatch):
    # CPU training is not bit-identical across processors, so the line says which one made it
    import os

    import torch

    from occlusion_distill.bench import runner

    monkeypatch.setattr(runner, "cpu_model", lambda: "Some Xeon @ 2.00GHz")
    assert runner.device_name("cpu") == (f"Some Xeon @ 2.00GHz ({torch.backends.cpu.get_cpu_capability()}), "
                                         f"{os.cpu_count()} cores")
    monkeypatch.undo()
    cpuinfo = Path("/proc/cpuinfo")
    models = [line.split(":", 1)[1].strip() for line in (cpuinfo.read_text().splitlines() if cpuinfo.is_file() else [])
              if line.startswith("model name")]
    if models:  # Linux: the model name, not "x86_64"
        assert runner.cpu_model() == models[0]
    else:
        assert runner.cpu_model().endswith(" CPU")


def test_a_piece_of_a_suite_needs_only_its_own_data_prepared(tmp_path):
    # docs/benchmarks.md's pieces: `--only 'synthfaces/*'` today, the real data set once it is prepared
    suite = tmp_path / "s.yaml"
    suite.write_text("seeds: [0]\ndistillers: [finetune]\nexperiments:\n"
                     "  - dataset: synthfaces\n    tasks: [expression]\n    occlusions: [mask]\n"
                     "  - dataset: ferplus\n    data: ferplus\n    tasks: [expression]\n    occlusions: [mask]\n")
    loaded = load_suite(str(suite), tmp_path)
    with pytest.raises(SuiteError, match="ferplus/expression/mask/finetune.*not prepared data"):
        check_suite(loaded)
    configs = check_suite(loaded, cells={"synthfaces/expression/mask/finetune"})
    assert set(configs) == {"synthfaces/expression/mask/finetune#0", "ferplus/expression/mask/finetune#0"}
    res = run_main("bench", "run", "--suite", suite, "--data-root", tmp_path, "--only", "synthfaces/*", "--check")
    assert res.returncode == 0, res.stderr
    assert "1 selected by --only, checked" in res.stdout and "ferplus/" not in res.stdout
    res = run_main("bench", "run", "--suite", suite, "--data-root", tmp_path, "--check")
    assert res.returncode != 0 and "not prepared data" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_seed_narrows_a_piece_to_some_seeds_and_refuses_a_seed_the_suite_does_not_run(tmp_path):
    suite = tmp_path / "s.yaml"
    suite.write_text("seeds: [0, 1, 2]\ndistillers: [finetune, kd]\nexperiments:\n"
                     "  - dataset: synthfaces\n    tasks: [expression]\n    occlusions: [mask, upper-half]\n")
    loaded = load_suite(str(suite), tmp_path)
    runs = [(c.id, s) for c, s in selected_runs(loaded, ("*/mask/*",), (2,))]
    assert runs == [("synthfaces/expression/mask/finetune", 2), ("synthfaces/expression/mask/kd", 2)]
    assert len(selected_runs(loaded, (), (0, 2))) == 8 and len(selected_runs(loaded)) == 12
    with pytest.raises(SuiteError, match="--seed 5: suite .* runs seeds 0, 1, 2 only"):
        selected_runs(loaded, (), (2, 5))
    res = run_main("bench", "run", "--suite", suite, "--seed", "7", "--out", tmp_path / "out")
    assert res.returncode != 0 and len(res.stderr.strip().splitlines()) == 1 and "--seed 7" in res.stderr
    assert not (tmp_path / "out").exists()
    res = run_main("bench", "run", "--suite", suite, "--only", "*/mask/*", "--seed", "2", "--check")
    assert res.returncode == 0 and "--seed 2 would run 2 of them" in " ".join(res.stdout.split()), res.stderr


def test_pieces_of_a_suite_run_at_once_into_one_out_keep_each_others_lines(tmp_path, monkeypatch):
    """Two pieces (say `--seed 0` and `--seed 1`) at once: the other piece's line, written while this one
    trained, is still there after this one adds its own (before, each wrote back the lines it had read at
    its start, so the last to finish dropped the other's)."""
    from occlusion_distill.bench import runner
    from occlusion_distill.bench.results import add_result, read_results
    from occlusion_distill.report import RichReporter

    suite_file = tmp_path / "tiny.yaml"
    suite_file.write_text("seeds: [0, 1]\ndistillers: [finetune]\nexperiments:\n  - dataset: synthfaces\n"
                          "    tasks: [expression]\n    occlusions: [mask]\n")
    suite = load_suite(str(suite_file), tmp_path)
    out = tmp_path / "out"
    other = {"cell": suite.cells[0].id, "seed": 1, "student": 61.0}

    class Result:  # what run_pipeline's RunResult gives the runner
        metrics = {"student": 60.0}
        histories = {}

    def train(cfg, *args, **kwargs):  # the other piece finishes its run while this one trains
        add_result(out, other)
        return Result()

    monkeypatch.setattr(runner, "run_pipeline", train)
    runner.run_suite(suite, out, RichReporter(quiet=True), cache=None, seeds=(0,), report=False)
    assert sorted((r["seed"], r["student"]) for r in read_results(out)) == [(0, 60.0), (1, 61.0)]


TRAINER_STOP = Interrupted("interrupted in stage 'student' at epoch 2, step 9; the last checkpoint (epoch 2, step 9) "
                           "is kept in somewhere")


@pytest.mark.parametrize("where, ctrl_c", [
    ("run_pipeline", TRAINER_STOP),  # the trainer's first Ctrl-C: it saves its state and says where it stopped
    ("run_pipeline", KeyboardInterrupt()),  # a second Ctrl-C, or one outside training (data loading, scoring)
    ("check_suite", KeyboardInterrupt()),  # before anything trains
], ids=["in-training", "elsewhere-in-a-run", "while-checking"])
@pytest.mark.parametrize("finished", [0, 1])
def test_ctrl_c_in_a_suite_says_what_is_kept_and_how_to_continue(tmp_path, monkeypatch, capsys, where, ctrl_c,
                                                                   finished):
    suite = tmp_path / "tiny.yaml"
    suite.write_text("seeds: [0]\ndistillers: [kd]\nsettings: {dataset_args: {n_train: 64, n_val: 32, n_test: 32}}\n"
                     "experiments:\n  - dataset: synthfaces\n    tasks: [expression]\n    occlusions: [mask]\n")
    if finished:  # a line of an earlier piece of the suite, kept whatever happens now
        (tmp_path / "out").mkdir()
        (tmp_path / "out" / RESULTS).write_text(json.dumps({"cell": "other/cell", "seed": 0}) + "\n")

    def interrupted(*args, **kwargs):
        raise ctrl_c

    monkeypatch.setattr(f"occlusion_distill.bench.runner.{where}", interrupted)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "run", "--suite", str(suite), "--out", "out", "--cache-dir", "cache", "--quiet", "--resume"])
    assert exit_info.value.code == 130
    err = capsys.readouterr().err.strip()
    # one line that names what was kept and the way on, not click's bare "Aborted!"
    assert len(err.splitlines()) == 1 and err.startswith("occdistill: error: interrupted"), err
    assert "--resume" in err and "aborted" not in err.lower()
    assert ("results.jsonl (1 so far)" in err) == bool(finished) and ("no run had finished" in err) != bool(finished)
    assert ("at epoch 2, step 9" in err) == (ctrl_c is TRAINER_STOP)  # where the stage stopped stays in the line
