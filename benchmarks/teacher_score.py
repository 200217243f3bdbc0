"""Score a suite cell's stored teacher on the clean test faces and set it beside the teacher of that
cell and seed in a results file: whether a teacher retrained into a run cache (by `suite_stages.py`, on
another machine or in another session) is the one the results lines were made with.

A student can be paired with `finetune` only when both started from the same teacher. CPU training is
bit-identical on one processor and code version but not across them (a results line names its
processor and commit), so a retrained teacher either matches every digit of the line's
`teacher_clean` and macro-F1, and the line's students stay paired with it, or it is another teacher,
and the seed's `finetune` and distilled students must be trained again from it.

    python benchmarks/teacher_score.py benchmarks/suites/standard.yaml /work/prepared /work/runs/cache \
        ferplus/expression/upper-half/kd 0 benchmarks/results/standard

Arguments: SUITE DATA_ROOT CACHE_DIR CELL SEED RESULTS_DIR (a `bench run --out`). It prints one JSON line and exits 0 when
the teacher matches the lines of that (dataset, task, seed), 1 when it differs, 2 on bad input (no
teacher stored, no such line, lines that name different teachers); it never trains. A few minutes on one core for FER+ at 48 px.
"""
import json
import sys
from pathlib import Path

from occlusion_distill.bench.results import read_results
from occlusion_distill.engine.cache import ModelCache
from occlusion_distill.engine.trainer import gathered_outputs
from occlusion_distill.errors import UsageError
from occlusion_distill.protocol.pipeline import ProtocolRun
from suite_stages import cell_config, script, seed_arg, teacher_stored  # benchmarks/, beside this script

USAGE = "usage: teacher_score.py SUITE DATA_ROOT CACHE_DIR CELL SEED RESULTS_DIR"


def main(argv: list[str]) -> int:
    if len(argv) != 6:
        print(USAGE, file=sys.stderr)
        return 2
    suite_file, data_root, cache_dir, cell_id, results = argv[0], argv[1], argv[2], argv[3], argv[5]
    seed = seed_arg(argv[4])
    cfg = cell_config(suite_file, data_root, cell_id, seed)
    lines = [r for r in read_results(Path(results)) if (r["dataset"], r["task"], r["seed"]) == (cfg.dataset, cfg.task, seed)]
    if not lines:
        raise UsageError(f"{results}/results.jsonl has no line of {cfg.dataset}/{cfg.task} seed {seed} to compare with")
    # every line of the seed should name one teacher; say so before minutes of loading and scoring
    teachers = {json.dumps(r["all_metrics"]["teacher_clean"], sort_keys=True) for r in lines}
    if len(teachers) > 1:
        raise UsageError(f"the {len(lines)} lines of {cfg.dataset}/{cfg.task} seed {seed} hold {len(teachers)} "
                         "different teachers: their students are not paired with one another")
    run = ProtocolRun(cfg, None, ModelCache(cache_dir))
    if not teacher_stored(run):
        raise UsageError(f"{cache_dir} holds no teacher of {cell_id} seed {seed}: train it first "
                         f"(suite_stages.py ... {cell_id} {seed} teacher)")
    task, data, teacher = run.preflight().task, run.load_data(), run.teacher()
    ours = task.metrics(gathered_outputs(teacher, data.test_clean, run.device), data.test_clean.targets)
    theirs = lines[0]["all_metrics"]["teacher_clean"]
    same = all(ours[k] == theirs[k] for k in theirs)
    print(json.dumps({"cell": cell_id, "seed": seed, "retrained": ours, "results_line": theirs,
                      "line_device": lines[0].get("device_name"), "line_commit": lines[0].get("git_commit"),
                      "same_teacher": same}))
    return 0 if same else 1


if __name__ == "__main__":
    script(main, "teacher_score.py")
