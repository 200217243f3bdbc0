"""Train stages of one suite cell and seed into a run cache, so that `occdistill bench run` then finds them.

`bench run` trains one stage at a time. This trains chosen stages of one (cell, seed) in a process of
its own, so that stages can train side by side or on another machine sharing the cache; the suite then
reuses their models (the same cache keys: the config is the suite's own, built by the same code) and
only scores them. The results lines are still written by
`bench run` alone, so they stay what it would have written (`reused_from_cache` says which stages came
from the cache). A stage needs the stages before it (a student, its seed's teacher): a process that
found its teacher missing would train one itself, so unless `teacher` is among the stages asked for, a
missing teacher is refused: start students once their teacher is stored. For example, two seeds' teachers side by side, then their students (issue 19's `standard` suite):

    export OMP_NUM_THREADS=1 S=benchmarks/suites/standard.yaml C=runs/standard-cache
    K=ferplus/expression/upper-half/kd
    python benchmarks/suite_stages.py $S prepared $C $K 1 teacher &
    python benchmarks/suite_stages.py $S prepared $C $K 2 teacher &
    wait
    python benchmarks/suite_stages.py $S prepared $C $K 1 baseline student &
    python benchmarks/suite_stages.py $S prepared $C $K 2 baseline student &
    wait
    occdistill bench run --suite standard --data-root prepared --cache-dir $C --resume \
        --only 'ferplus/expression/upper-half/finetune' --only 'ferplus/expression/upper-half/kd' --seed 1 --seed 2

Side by side, with test runs competing part of the time, each teacher took 70-73 minutes on one
session's 2-core machine, against 38-46 for the suite's own teachers on an earlier one (also beside
another training): time a stage first before counting on a speed-up.

Arguments: SUITE DATA_ROOT CACHE_DIR CELL SEED STAGE...; a STAGE is `teacher`, `baseline` (finetune's
student) or `student` (the cell's distiller: for `combined`, its members and then its head).

A stage in training saves its state at every epoch end under CACHE_DIR/stage-states/ (one directory per
cell, seed, configuration and list of stages asked for), and the same command run again continues it
from there: a student of 16 epochs killed at epoch 12, say by the end of a session on a machine that
keeps its disk, loses at most one epoch. The directory is removed once every stage asked for has
finished.
"""
import sys
import time
from pathlib import Path
from typing import Callable, NoReturn

from occlusion_distill.bench.results import config_digest
from occlusion_distill.bench.suite import load_suite
from occlusion_distill.engine.cache import ModelCache
from occlusion_distill.config import RunConfig
from occlusion_distill.errors import OccdistillError, UsageError
from occlusion_distill.protocol.pipeline import ProtocolRun, finish_run

STAGES = ("teacher", "baseline", "student")
STATES = "stage-states"  # under CACHE_DIR: the states of stages in training, so that a rerun resumes them
USAGE = "usage: suite_stages.py SUITE DATA_ROOT CACHE_DIR CELL SEED STAGE... (STAGE: teacher, baseline, student)"


def cell_config(suite_file: str, data_root: str, cell_id: str, seed: int) -> RunConfig:
    """The run config of ``cell_id`` at ``seed`` in a suite file; a cell it lacks is a ``UsageError``."""
    suite = load_suite(suite_file, data_root=Path(data_root))
    cells = {cell.id: cell for cell in suite.cells}
    if cell_id not in cells:
        raise UsageError(f"suite {suite.name} has no cell {cell_id}; it has: {', '.join(cells)}")
    return cells[cell_id].config(seed, suite.preset)


def seed_arg(text: str) -> int:
    """The SEED argument of these scripts; anything but a whole number is a ``UsageError``."""
    if not (text.isascii() and text.isdigit()):  # isdigit() alone takes '²', which int() refuses
        raise UsageError(f"SEED must be a whole number, not {text!r}")
    return int(text)


def teacher_stored(run: ProtocolRun) -> bool:
    """Whether the run's cache (or checkpoints) holds its teacher: checked before minutes of data loading."""
    return run.stages.get("teacher", "teachers", run.teacher_key)[0] is not None


def script(main: Callable[[list[str]], int], name: str) -> NoReturn:
    """Run a benchmark script's ``main`` on the command line; bad input (data not prepared, a cell the
    suite lacks) is one line, as occdistill says it, not a traceback."""
    try:
        sys.exit(main(sys.argv[1:]))
    except OccdistillError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)


def main(argv: list[str]) -> int:
    if len(argv) < 6 or any(stage not in STAGES for stage in argv[5:]):
        print(USAGE, file=sys.stderr)
        return 2
    suite_file, data_root, cache_dir, cell_id, seed, stages = argv[0], argv[1], argv[2], argv[3], seed_arg(argv[4]), argv[5:]
    cfg = cell_config(suite_file, data_root, cell_id, seed)
    # per configuration, so that a changed suite never resumes another setting's state; per list of stages, so that processes training other stages of this cell and seed side
    # by side (`baseline` in one, `student` in another) never clear each other's states when they finish
    states = Path(cache_dir) / STATES / f"{cell_id.replace('/', '-')}-s{seed}-{config_digest(cfg)}-{'-'.join(stages)}"
    # a state another version of the toolkit wrote (its stage key differs) starts the stage afresh, as in bench run
    run = ProtocolRun(cfg, None, ModelCache(cache_dir), checkpoint_dir=states, discard_stale=True)
    run.preflight()
    if "teacher" not in stages and not teacher_stored(run):
        print(f"seed {seed}'s teacher is not in {cache_dir} yet: train it first (stage `teacher`)", file=sys.stderr)
        return 2
    for stage in stages:
        t = time.time()
        getattr(run, stage)()
        print(f"{cell_id} seed {seed} {stage}: {time.time() - t:.0f} s", flush=True)
    finish_run(states)  # every stage is in the run cache now
    try:
        states.rmdir()
    except OSError:  # not there, or not empty
        pass
    return 0


if __name__ == "__main__":
    script(main, "suite_stages.py")
