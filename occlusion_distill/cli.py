"""``occdistill``: thin click commands that parse options, build a config and call the library."""

from __future__ import annotations

import datetime as _dt
import json
import os
import shlex
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ._version import __version__
from .errors import EXIT_INTERRUPTED, EXIT_RUNTIME, EXIT_USAGE, OccdistillError, UsageError
from .registry import KINDS, PluginLoadWarning, list_plugins, registry

if TYPE_CHECKING:
    from .config import RunConfig


class PluginName(click.ParamType):
    """A registered plugin name; an unknown one fails with the closest valid names."""

    def __init__(self, kind: str):
        self.kind = kind
        self.name = kind[:-1]

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        reg = registry(self.kind)
        if value not in reg:
            self.fail(reg.unknown_message(str(value)), param, ctx)
        return str(value)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="occdistill")
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Teacher -> student distillation for face models under occlusion.

    A teacher trained on clean faces transfers what it knows to a student that only sees occluded
    faces (half faces, masks, VR headsets). Start with:  occdistill run
    """
    ctx.obj = {**(ctx.obj or {}), "debug": debug}  # main() puts the arguments it was given there too


@cli.command("list")
@click.argument("kind", required=False, type=click.Choice(KINDS))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_cmd(kind: str | None, as_json: bool) -> None:
    """List registered plugins (all kinds, or one KIND) with descriptions and origins."""
    from .report import RichReporter

    listing = list_plugins(kind)
    load_warnings = [w for k in listing for w in registry(k).load_warnings]
    reporter = RichReporter()
    if as_json:
        reporter.print_json(json.dumps({**listing, "warnings": load_warnings}, indent=2))
    else:
        reporter.plugin_table(listing)


_data_option = click.option(
    "--data", "data_dir", type=click.Path(path_type=Path, exists=True, file_okay=False), default=None,
    help="Prepared data for --dataset (from `occdistill data prepare`).")


def _with_data(dataset_args: dict[str, Any], data_dir: Path | None) -> dict[str, Any]:
    """The data set options, with --data as the ``data`` option (an absolute path: it goes into cache keys)."""
    return dataset_args if data_dir is None else {**dataset_args, "data": str(data_dir.resolve())}


def _kv(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> dict[str, Any]:
    from .config import parse_kv

    try:
        return parse_kv(value, param.name.split("_")[0])
    except UsageError as exc:
        raise click.BadParameter(str(exc), ctx, param) from exc


def _augment(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> dict[str, Any] | str | None:
    """``--augment default`` and ``--augment KEY=VALUE`` (the other ranges at their defaults)."""
    if not value:
        return None
    return _kv(ctx, param, tuple(v for v in value if v != "default")) or "default"


@cli.command("run")
@click.option("--task", type=PluginName("tasks"), default="expression", show_default=True,
              help="What to predict (see `occdistill list tasks`).")
@click.option("--occlusion", type=PluginName("occlusions"), default="lower-half", show_default=True,
              help="What hides part of the student's faces.")
@click.option("--distiller", type=PluginName("distillers"), default="kd", show_default=True,
              help="How the student learns from the teacher (finetune = baseline, no teacher).")
@click.option("--backbone", type=PluginName("backbones"), default=None,
              help="A registered backbone or any timm model name [default: simple-cnn].")
@click.option("--dataset", type=PluginName("datasets"), default="synthfaces", show_default=True,
              help="Data set plugin (synthfaces is built in and needs no download).")
@_data_option
@click.option("--preset", type=click.Choice(["smoke", "default"]), default="default", show_default=True,
              help="Size of the run: smoke (< 1 min, for tests) or default (a few minutes on CPU).")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Epochs for the teacher and for each student (overrides the preset).")
@click.option("--teacher-epochs", type=click.IntRange(min=1), default=None,
              help="Epochs for the teacher (overrides --epochs).")
@click.option("--student-epochs", type=click.IntRange(min=1), default=None,
              help="Epochs for the baseline and each student (overrides --epochs).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None)
@click.option("--image-size", type=int, default=None, help="Face size in pixels (>= 32).")
@click.option("--channels", type=click.Choice(["1", "3"]), default=None, help="1 grey, 3 RGB [default: the data's].")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None, help="Teacher learning rate.")
@click.option("--student-lr", type=click.FloatRange(min=0, min_open=True), default=None)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu, cuda, cuda:1 ...")
@click.option("--pretrained", is_flag=True,
              help="Start the teacher from the backbone's pretrained weights (timm and facenet-pytorch download "
                   "them; dlib-resnet29's come with the faces extra).")
@click.option("--weights", type=str, default=None, help="Start the teacher from a local backbone state_dict (weights-only file).")
@click.option("--num-workers", type=click.IntRange(min=0), default=None, help="Data loader worker processes.")
@click.option("--no-flip", is_flag=True, help="No horizontal flips during training.")
@click.option("--teacher-outputs", type=click.Choice(["cached", "online"]), default=None,
              help="cached [default]: the teacher runs once per clean face and flip; online: at every step.")
@click.option("--occlusion-arg", "occlusion_args", multiple=True, callback=_kv, metavar="KEY=VALUE",
              help="Option for the occlusion plugin (repeatable), e.g. split=0.6.")
@click.option("--distiller-arg", "distiller_args", multiple=True, callback=_kv, metavar="KEY=VALUE",
              help="Option for the distiller (repeatable), e.g. lambda=0.7 tau=3.")
@click.option("--dataset-arg", "dataset_args", multiple=True, callback=_kv, metavar="KEY=VALUE",
              help="Option for the data set plugin (repeatable), e.g. n_train=5000.")
@click.option("--backbone-arg", "backbone_args", multiple=True, callback=_kv, metavar="KEY=VALUE",
              help="Option for the backbone's constructor (repeatable), e.g. norm=batchnorm for dlib-resnet29.")
@click.option("--augment", multiple=True, callback=_augment, metavar="default|KEY=VALUE",
              help="Train every stage on shifted, scaled, rotated and jittered faces, the occluder drawn at the "
                   "moved landmarks: 'default', or ranges to change (repeatable): translate=0.08 scale=0.1 "
                   "rotate=10 brightness=0.2 contrast=0.2. The teacher then runs online.")
@click.option("--mix", default=None, metavar="mixup|cutmix[=ALPHA]|none",
              help="Mix the students' batches, the clean and the occluded view with one draw and the targets "
                   "alike: mixup (alpha 0.4) or cutmix (alpha 1.0), e.g. mixup=0.2. The teacher then runs online.")
@click.option("--checkpoint-every", type=click.IntRange(min=0), default=None, metavar="STEPS",
              help="Also save each stage's state every STEPS steps [default: at the end of each epoch only].")
@click.option("--amp", type=click.Choice(["auto", "bf16", "fp16", "off"]), default=None,
              help="Mixed precision: auto [default] is bf16 on a GPU that has it and off on CPU.")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the network (GPU; slow to start).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Run directory to create [default: runs/TASK-OCCLUSION-DISTILLER-sSEED-TIME].")
@click.option("--overwrite", is_flag=True, help="Replace --out (or an interrupted run of it) if it exists.")
@click.option("--resume", "resume", type=click.Path(path_type=Path, file_okay=False), default=None, metavar="RUN_DIR",
              help="Continue an interrupted run from its last checkpoint, with its own settings.")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
              help="Where trained teachers and baselines are kept for reuse [default: ~/.cache/occlusion-distill "
                   "or $OCCDISTILL_CACHE].")
@click.option("--no-cache", is_flag=True, help="Train everything afresh and store nothing in the cache.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.pass_context
def run_cmd(ctx: click.Context, task: str, occlusion: str, distiller: str, backbone: str | None, dataset: str,
            data_dir: Path | None, preset: str,
            epochs: int | None, teacher_epochs: int | None, student_epochs: int | None, batch_size: int | None,
            image_size: int | None, channels: str | None,
            lr: float | None, student_lr: float | None, seed: int, device: str, pretrained: bool,
            weights: str | None, num_workers: int | None, no_flip: bool, teacher_outputs: str | None,
            occlusion_args: dict, distiller_args: dict, dataset_args: dict, backbone_args: dict,
            augment: dict | str | None, mix: str | None, checkpoint_every: int | None, amp: str | None, compile_: bool,
            out: Path | None, overwrite: bool,
            resume: Path | None,
            cache_dir: Path | None, no_cache: bool, quiet: bool) -> None:
    """Train teacher, baseline and distilled student; score them on occluded test faces.

    Writes a run directory with config.json, metrics.json, report.md, plots/ and checkpoints/. Each stage
    saves its state as it trains: an interrupted run (Ctrl-C, a crash, a kill) continues with
    `occdistill run --resume RUN_DIR`. Under `torchrun --nproc_per_node N -m occlusion_distill run ...`
    the processes train one run together (DDP); rank 0 writes the files.
    """
    from .engine.cache import ModelCache
    from .io import default_cache_dir
    from .protocol.rundir import run_to_dir
    from .report import RichReporter

    cfg, command = None, None
    if resume is not None:
        given = [p.opts[0] for p in ctx.command.params if p.name not in ("resume", "quiet", "cache_dir", "no_cache")
                 and ctx.get_parameter_source(p.name) is not click.core.ParameterSource.DEFAULT]
        if given:
            raise UsageError(f"--resume continues a run with its own settings; drop {', '.join(given)}")
        out = resume  # its config and command are read from the interrupted run
    else:
        cfg = _run_config(ctx.params)
        if out is None:
            stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            out = Path("runs") / f"{task}-{occlusion}-{distiller}-s{seed}-{stamp}"
        # the arguments main() was given: sys.argv is another program's when main is called in a process
        argv = (ctx.obj or {}).get("argv", sys.argv[1:])
        command = "occdistill " + " ".join(shlex.quote(a) for a in argv)
    reporter = RichReporter(quiet=quiet)  # under torchrun, ranks other than 0 report nothing
    result = run_to_dir(cfg, out, resume=resume is not None, overwrite=overwrite, reporter=reporter,
                        cache=ModelCache(None if no_cache else (cache_dir or default_cache_dir())), command=command)
    if result.run_dir is not None:
        reporter.results(result.metrics, str(result.run_dir))


def _run_config(params: dict[str, Any]) -> RunConfig:
    """The ``RunConfig`` of ``occdistill run``'s parsed options (``click.Context.params``)."""
    from .config import RunConfig

    p = params
    weights = p["weights"]
    dataset_args = _with_data(p["dataset_args"], p["data_dir"])
    if weights is not None and not Path(weights).is_file():
        raise UsageError(f"--weights file not found: {weights}")
    if weights is not None and p["pretrained"]:
        raise UsageError("--pretrained and --weights both set the teacher's starting weights; choose one")
    return RunConfig.from_options(
        p["preset"], task=p["task"], occlusion=p["occlusion"], distiller=p["distiller"], backbone=p["backbone"],
        dataset=p["dataset"], teacher_epochs=p["teacher_epochs"] or p["epochs"],
        student_epochs=p["student_epochs"] or p["epochs"], batch_size=p["batch_size"], image_size=p["image_size"],
        channels=int(p["channels"]) if p["channels"] else None, lr=p["lr"], student_lr=p["student_lr"],
        seed=p["seed"], device=p["device"], pretrained=p["pretrained"] or None,
        weights=str(Path(weights).resolve()) if weights else None, num_workers=p["num_workers"],
        flip=False if p["no_flip"] else None, teacher_outputs=p["teacher_outputs"],
        checkpoint_every=p["checkpoint_every"], amp=p["amp"], compile=p["compile_"] or None,
        occlusion_args=p["occlusion_args"], distiller_args=p["distiller_args"], dataset_args=dataset_args,
        backbone_args=p["backbone_args"], augment=p["augment"], mix=p["mix"])


@cli.command("preview")
@click.option("--occlusion", type=PluginName("occlusions"), required=True, help="The occlusion to show.")
@click.option("--dataset", type=PluginName("datasets"), default="synthfaces", show_default=True)
@_data_option
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="test", show_default=True)
@click.option("--n", "n", type=click.IntRange(1, 256), default=16, show_default=True, help="Faces to show.")
@click.option("--seed", type=int, default=0, show_default=True, help="Chooses the faces, their poses and the occlusions.")
@click.option("--image-size", type=click.IntRange(min=32), default=112, show_default=True)
@click.option("--channels", type=click.Choice(["1", "3"]), default=None, help="1 grey, 3 RGB [default: the data's].")
@click.option("--vary-pose/--as-stored", default=True, show_default=True,
              help="Show faces under random roll, scale and shift (placement test) or as the data set stores them.")
@click.option("--tile", type=click.IntRange(32, 512), default=96, show_default=True, help="Pixels per face in the grid.")
@click.option("--columns", type=click.IntRange(1, 32), default=4, show_default=True, help="Before/after pairs per row.")
@click.option("--occlusion-arg", "occlusion_args", multiple=True, callback=_kv, metavar="KEY=VALUE",
              help="Option for the occlusion plugin (repeatable).")
@click.option("--dataset-arg", "dataset_args", multiple=True, callback=_kv, metavar="KEY=VALUE",
              help="Option for the data set plugin (repeatable).")
@click.option("--palette", is_flag=True, help="Save 256 colours (about 4x smaller, for docs) instead of true colour.")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), required=True, help="PNG file to write.")
def preview_cmd(occlusion: str, dataset: str, data_dir: Path | None, split: str, n: int, seed: int, image_size: int, channels: str | None,
                vary_pose: bool,
                tile: int, columns: int, occlusion_args: dict, dataset_args: dict, palette: bool, out: Path) -> None:
    """Save a grid of faces before and after an occlusion, landmarks drawn, to judge it at a glance."""
    from .tools.preview import preview_faces, preview_grid, save_png
    from .registry import registry as plugins
    from .report import RichReporter

    if out.suffix.lower() != ".png":
        raise UsageError(f"--out must be a .png file, not {out}")
    occ, _ = plugins("occlusions").build(occlusion, **occlusion_args)
    dataset_args = _with_data(dataset_args, data_dir)
    faces = preview_faces(dataset, dataset_args, split=split, n=n, seed=seed, image_size=image_size,
                          channels=int(channels) if channels else None, vary=vary_pose)
    grid = preview_grid(faces, occ, seed=seed, tile=tile, columns=columns,
                        title=f"{occlusion} on {dataset} ({split}, seed {seed}"
                              f"{', varied pose' if vary_pose else ''})")
    save_png(grid, out, palette=palette)
    RichReporter().info(f"{len(faces)} faces -> {out} ({out.stat().st_size / 1024:.0f} KB)")


@cli.command("check-plugin")
@click.argument("names", nargs=-1)
@click.option("--all", "check_all", is_flag=True, help="Check every registered occlusion and distiller.")
@click.option("--kind", type=click.Choice(["occlusions", "distillers"]), default=None,
              help="The plugin kind, for a name that is both an occlusion and a distiller.")
@click.option("--option", "options", multiple=True, callback=_kv, metavar="KEY=VALUE",
              help="Option for the plugin's constructor (repeatable), e.g. opacity=0.8.")
@click.option("--task", "tasks", type=PluginName("tasks"), multiple=True,
              help="Task(s) a distiller trains on [default: expression and age].")
@click.option("--min-speed", type=click.FloatRange(min=0), default=None, metavar="RATIO",
              help="Slowest acceptable occlusion, as a multiple of CoarseDropout's images/s [default: 0.05].")
@click.option("--json", "json_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Also write the results as JSON.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.pass_context
def check_plugin_cmd(ctx: click.Context, names: tuple[str, ...], check_all: bool, kind: str | None,
                     options: dict[str, Any], tasks: tuple[str, ...], min_speed: float | None, json_path: Path | None,
                     quiet: bool) -> None:
    """Check occlusion and distiller plugins against the contract; exit 1 when a check fails.

    Occlusions: settings() records every option, the input is left unchanged, the same seed gives the
    same output, keypoints are unchanged, shape, dtype and channels are kept on grey and RGB faces,
    pixels change only inside the coverage mask; the share of each face region hidden and the speed
    against CoarseDropout are measured. Distillers, for expression and age: builds with JSON settings,
    a few training steps on built-in faces return a trained student, finite loss terms, gradients that
    reach the student and not the teacher (left as given), a student that reloads from its weights.
    """
    from .checks import DEFAULT_MIN_SPEED, DISTILLER_TASKS, check_plugin, planned_checks, resolve_kind
    from .io import write_json
    from .report import RichReporter

    if check_all == bool(names):
        raise UsageError("name the plugins to check, or pass --all (not both)")
    if check_all and options:
        raise UsageError("--option applies to one named plugin, not to --all")
    if options and len(names) > 1:
        raise UsageError("--option applies to one named plugin; check the others separately")
    targets = [(k, n) for k in ("occlusions", "distillers") if kind in (None, k) for n in registry(k).names()] \
        if check_all else [(resolve_kind(n, kind), n) for n in names]
    tasks = tasks or DISTILLER_TASKS
    if options:  # options are the user's input: a bad one is a usage error, not a failed check
        k, name = targets[0]
        extra = {}
        if k == "distillers":  # built for a task of a kind it declares, so that only the options are judged
            from .distillers.base import task_kind

            kinds = getattr(registry(k).get(name).obj, "task_kinds", None)
            built = [registry("tasks").create(t) for t in tasks]
            extra["task"] = next((t for t in built if kinds is None or task_kind(t) in kinds), built[0])
        registry(k).build(name, **options, **extra)
    reporter = RichReporter(quiet=quiet)
    reports = []
    for k, name in targets:
        bar = reporter.stage(f"check {name}", planned_checks(k, tasks))
        try:
            report = check_plugin(name, k, options, tasks=tasks, tick=bar.advance,
                                  min_speed=DEFAULT_MIN_SPEED if min_speed is None else min_speed)
        finally:
            bar.close()
        reporter.plugin_check(report.as_dict())
        reports.append(report)
    failed = [r.name for r in reports if not r.passed]
    if json_path is not None:
        write_json(json_path, {"plugins": [r.as_dict() for r in reports]})
        reporter.info(f"results -> {json_path}")
    if failed:
        reporter.error(f"{len(failed)} of {len(reports)} plugin(s) failed the contract: {', '.join(failed)}")
        ctx.exit(1)
    reporter.info(f"{len(reports)} plugin(s) passed every check")


@cli.group("data")
def data_group() -> None:
    """Prepare real data sets once (faces, labels, landmarks) and inspect prepared data."""


@data_group.command("prepare")
@click.argument("name", type=PluginName("datasets"))
@click.option("--source", type=click.Path(path_type=Path, exists=True), required=True,
              help="The data set's official files: a file, a zip, or a folder searched for them.")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True, help="Directory to write.")
@click.option("--landmarks", type=click.Choice(["auto", "mtcnn", "template", "given"]), default="auto",
              show_default=True,
              help="mtcnn: detect the 5 points on each face (the template where none is found); template: the "
                   "data set's typical positions for every face; given: the data set's own (AffectNet); auto: "
                   "given where the data set has them, else mtcnn.")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Only the first N faces of each split (a quick look or a test).")
@click.option("--device", default="cpu", show_default=True, help="Where MTCNN runs (cpu, cuda).")
@click.option("--arg", "read_args", multiple=True, callback=_kv, metavar="KEY=VALUE",
              help="Option for the data set's reader (repeatable), e.g. label=gender size=96 for folder.")
@click.option("--overwrite", is_flag=True, help="Replace --out when it holds other prepared data.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def data_prepare_cmd(name: str, source: Path, out: Path, landmarks: str, limit: int | None, device: str,
                     read_args: dict, overwrite: bool, quiet: bool) -> None:
    """Convert data set NAME from its official files into prepared data (see `occdistill data info`)."""
    from .data.prepare import prepare
    from .report import RichReporter

    reporter = RichReporter(quiet=quiet)
    manifest = prepare(name, source, out, landmarks=landmarks, limit=limit, overwrite=overwrite,
                       reporter=reporter, device=device, read_args=read_args)
    reporter.data_summary(manifest, str(out))


@data_group.command("info")
@click.argument("root", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--dataset-arg", "dataset_args", multiple=True, callback=_kv, metavar="KEY=VALUE",
              help="Choose faces as a run would, e.g. mode=plurality for ferplus.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def data_info_cmd(root: Path, dataset_args: dict, as_json: bool) -> None:
    """Counts per split and class, label statistics and landmark sources of prepared data."""
    from .data.info import describe
    from .report import RichReporter

    info = describe(root, dataset_args)
    reporter = RichReporter()
    if as_json:
        reporter.print_json(json.dumps(info, indent=2))
    else:
        reporter.data_info(info)


@cli.group("bench")
def bench_group() -> None:
    """Benchmark suites (run, report) and measurements (occlusions, data, overhead, trainer, memory)."""


@bench_group.command("run")
@click.option("--suite", "suite_name", required=True, metavar="NAME|FILE",
              help="A suite in benchmarks/suites (smoke, quick, paper) or the path of a suite YAML file.")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Results directory [default: runs/bench-NAME]; a rerun continues where it stopped.")
@click.option("--data-root", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Where the suite's prepared data sets are (its 'data' entries are relative to this) "
                   "[default: $OCCDISTILL_PREPARED or ./prepared].")
@click.option("--only", multiple=True, metavar="PATTERN",
              help="Run only cells whose id (dataset/task/occlusion/distiller) matches; repeatable, globs allowed.")
@click.option("--seed", "seeds", multiple=True, type=int, metavar="N",
              help="Run only these of the suite's seeds; repeatable. With --only: those cells at those seeds.")
@click.option("--check", is_flag=True, help="Check the suite (names, fields, data) and list its cells; train nothing.")
@click.option("--resume", is_flag=True,
              help="Continue the results in --out: finished runs are skipped, an unfinished one continues from its "
                   "last checkpoint.")
@click.option("--overwrite", is_flag=True, help="Discard the results in --out and start again.")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
              help="Run cache for teachers and students [default: $OCCDISTILL_CACHE or ~/.cache/occlusion-distill].")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def bench_run_cmd(suite_name: str, out: Path | None, data_root: Path | None, only: tuple[str, ...],
                  seeds: tuple[int, ...], check: bool, resume: bool, overwrite: bool, cache_dir: Path | None, quiet: bool) -> None:
    """Run a benchmark suite: every cell x seed, resumable; then summary.md, summary.csv and plots."""
    from .bench.runner import check_suite, run_suite, selected_runs
    from .bench.suite import load_suite
    from .engine.cache import ModelCache
    from .io import default_cache_dir
    from .report import RichReporter

    if data_root is None:
        data_root = Path(os.environ.get("OCCDISTILL_PREPARED", "prepared"))
    suite = load_suite(suite_name, data_root.resolve())
    reporter = RichReporter(quiet=quiet)
    if check:
        ids = {cell.id for cell, _ in selected_runs(suite, only, seeds)}
        configs = check_suite(suite, reporter, cells=ids)
        reporter.suite_cells(suite, len(configs), [cell for cell in suite.cells if cell.id in ids], seeds)
        return
    out = out or Path("runs") / f"bench-{suite.name}"
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a directory")
    # the command that makes the whole directory: without --only or --seed (pieces) and the machine's cache path
    command = f"occdistill bench run --suite {shlex.quote(suite_name)}"
    if any("data" in c.settings.get("dataset_args", {}) for c in suite.cells):
        command += f" --data-root {shlex.quote(str(data_root))}"
    command += f" --out {shlex.quote(str(out))}"
    if resume and overwrite:
        raise UsageError("--resume continues the results in --out and --overwrite discards them; choose one")
    result = run_suite(suite, out, reporter, ModelCache(cache_dir or default_cache_dir()), only=only, seeds=seeds,
                       command=command, resume=resume, overwrite=overwrite)
    reporter.info(f"{result['ran']} runs done, {result['skipped']} already there; summary -> {out / 'summary.md'}")


@bench_group.command("report")
@click.argument("directory", type=click.Path(path_type=Path, exists=True, file_okay=False))
def bench_report_cmd(directory: Path) -> None:
    """Rebuild summary.md, summary.csv and plots/ of a suite directory from its results.jsonl."""
    from .bench.summary import write_report
    from .report import RichReporter

    result = write_report(directory)
    RichReporter().info(f"{result['cells']} cells from {result['runs']} runs -> {directory / 'summary.md'}, "
                        f"summary.csv, plots/")


@bench_group.command("sweep", context_settings={"ignore_unknown_options": True})
@click.option("--grid", "axes", multiple=True, required=True, metavar="KEY=V1,V2,...",
              help="An axis of the grid (repeatable): a run option (student_lr=1e-4,3e-4) or a distiller option "
                   "(lambda=0.5,0.9).")
@click.option("--seeds", default="0", show_default=True, metavar="S1,S2,...",
              help="Seeds each setting is trained with; the ranking averages over them.")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Sweep directory (sweep.jsonl, chosen.json, summary.md); a rerun continues where it stopped.")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
              help="Run cache [default: $OCCDISTILL_CACHE or ~/.cache/occlusion-distill].")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.argument("run_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def bench_sweep_cmd(ctx: click.Context, axes: tuple[str, ...], seeds: str, out: Path, cache_dir: Path | None,
                    quiet: bool, run_args: tuple[str, ...]) -> None:
    """Choose a setting on occluded validation faces: train every grid setting x seed, rank by the mean
    best validation score, and score only the chosen setting on the test faces.

    RUN_ARGS are `occdistill run`'s options for everything the grid does not vary. Example:
    occdistill bench sweep --grid lambda=0.5,0.9 --grid tau=2,4 --seeds 0,1 --out sweeps/kd --
    --dataset ferplus --data prepared/ferplus --occlusion upper-half --distiller kd
    """
    from .bench.sweep import parse_grid, run_sweep
    from .engine.cache import ModelCache
    from .io import default_cache_dir
    from .report import RichReporter

    args = [a for a in run_args if a != "--"]
    # run options a sweep sets itself, or takes before the "--"
    own = {"--out", "--resume", "--overwrite", "--seed", "--no-cache", "--cache-dir", "--quiet"}
    given = sorted({a.split("=")[0] for a in args if a.split("=")[0] in own})
    if given:
        raise UsageError(f"bench sweep sets the seeds (--seeds), its directory (--out), the cache (--cache-dir, "
                         f"before --) and --quiet itself; drop {', '.join(given)} from the run options")
    try:
        seed_list = [int(x) for x in seeds.split(",")]
    except ValueError:
        raise UsageError(f"--seeds takes whole numbers separated by commas, not '{seeds}'") from None
    if not seed_list or min(seed_list) < 0 or len(set(seed_list)) < len(seed_list):
        raise UsageError(f"--seeds takes distinct whole numbers >= 0, not '{seeds}'")
    grid = parse_grid(axes)
    run_ctx = run_cmd.make_context("run", list(args), parent=ctx)  # click's parser empties the list it is given
    cfg = _run_config(run_ctx.params)
    # what makes the directory, without the machine's cache path
    command = " ".join(["occdistill bench sweep", *[f"--grid {shlex.quote(a)}" for a in axes], f"--seeds {seeds}",
                        f"--out {shlex.quote(str(out))}", "--", *map(shlex.quote, args)])
    reporter = RichReporter(quiet=quiet)
    result = run_sweep(cfg, grid, seed_list, out, reporter, ModelCache(cache_dir or default_cache_dir()),
                       command=command)
    reporter.info(f"chosen on validation: {result['chosen']['label']} -> {out / 'summary.md'}")


@bench_group.command("occlusions")
@click.option("--json", "json_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Also write the results as JSON.")
@click.option("--faces", type=click.IntRange(min=1), default=512, show_default=True,
              help="Built-in faces (varied pose and scale) for the coverage means.")
@click.option("--rounds", type=click.IntRange(min=1), default=5, show_default=True,
              help="Interleaved timing rounds; the best round counts.")
@click.option("--calls", type=click.IntRange(min=1), default=200, show_default=True, help="Images per timing round.")
@click.option("--occlusion", "names", type=PluginName("occlusions"), multiple=True,
              help="Only these occlusions (repeatable) [default: every registered one].")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def bench_occlusions_cmd(json_path: Path | None, faces: int, rounds: int, calls: int, names: tuple[str, ...],
                         quiet: bool) -> None:
    """Throughput (one thread, 112 px RGB, against CoarseDropout) and per-region coverage of each occlusion."""
    from .bench.occlusions import run as bench_occlusions
    from .io import write_json
    from .report import RichReporter

    reporter = RichReporter(quiet=quiet)
    result = bench_occlusions(list(names) or None, n_faces=faces, rounds=rounds, calls=calls, reporter=reporter)
    reporter.occlusion_bench(result)
    if json_path is not None:
        write_json(json_path, result)
        reporter.info(f"results -> {json_path}")


@bench_group.command("data")
@click.option("--dataset", type=PluginName("datasets"), default="synthfaces", show_default=True)
@_data_option
@click.option("--dataset-arg", "dataset_args", multiple=True, callback=_kv, metavar="KEY=VALUE")
@click.option("--task", type=PluginName("tasks"), default="expression", show_default=True)
@click.option("--occlusion", type=PluginName("occlusions"), default="mask", show_default=True)
@click.option("--image-size", type=click.IntRange(min=32), default=40, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=2), default=64, show_default=True)
@click.option("--num-workers", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--batches", type=click.IntRange(min=4), default=40, show_default=True, help="Batches to time.")
@click.option("--json", "json_path", type=click.Path(path_type=Path, dir_okay=False), default=None)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def bench_data_cmd(dataset: str, data_dir: Path | None, dataset_args: dict, task: str, occlusion: str,
                   image_size: int, batch_size: int, num_workers: int, batches: int, json_path: Path | None,
                   quiet: bool) -> None:
    """Samples/s of the training input pipeline (read, flip, occlude, tensor) next to training steps/s."""
    from .bench.data import run as bench_data
    from .io import write_json
    from .report import RichReporter

    dataset_args = _with_data(dataset_args, data_dir)
    reporter = RichReporter(quiet=quiet)
    result = bench_data(dataset=dataset, dataset_args=dataset_args, task=task, occlusion=occlusion,
                        image_size=image_size, batch_size=batch_size, num_workers=num_workers, batches=batches,
                        reporter=reporter)
    reporter.data_bench(result)
    if json_path is not None:
        write_json(json_path, result)


@bench_group.command("overhead")
@click.option("--json", "json_path", type=click.Path(path_type=Path, dir_okay=False), default=None)
@click.option("--faces", type=click.IntRange(min=256), default=5000, show_default=True, help="Training faces per epoch.")
@click.option("--bank-size", "bank_sizes", type=click.IntRange(min=1000), multiple=True,
              help="Memory bank sizes to time mining on (repeatable) [default: 10000, 100000, 1000000].")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def bench_overhead_cmd(json_path: Path | None, faces: int, bank_sizes: tuple[int, ...], quiet: bool) -> None:
    """Epoch seconds of finetune, kd and triplet, and FAISS vs torch mining cost per step."""
    from .bench.overhead import BANK_SIZES
    from .bench.overhead import run as bench_overhead
    from .io import write_json
    from .report import RichReporter

    reporter = RichReporter(quiet=quiet)
    result = bench_overhead(n_train=faces, bank_sizes=tuple(bank_sizes) or BANK_SIZES, reporter=reporter)
    reporter.overhead_bench(result)
    if json_path is not None:
        write_json(json_path, result)


@bench_group.command("trainer")
@click.option("--json", "json_path", type=click.Path(path_type=Path, dir_okay=False), default=None)
@click.option("--faces", type=click.IntRange(min=64), default=2000, show_default=True, help="Training faces per epoch.")
@click.option("--epochs", type=click.IntRange(min=1), default=2, show_default=True, help="Epochs per timed training.")
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True,
              help="Interleaved rounds; each side's best round counts.")
@click.option("--image-size", type=click.IntRange(min=32), default=None, help="Face size [default: a run's].")
@click.option("--batch-size", type=click.IntRange(min=2), default=None, help="[default: a run's]")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def bench_trainer_cmd(json_path: Path | None, faces: int, epochs: int, rounds: int, image_size: int | None,
                      batch_size: int | None, quiet: bool) -> None:
    """Training images/s of the stage trainer (finetune) against a bare PyTorch loop, same model and batches."""
    from .bench.trainer import run as bench_trainer
    from .io import write_json
    from .report import RichReporter

    reporter = RichReporter(quiet=quiet)
    result = bench_trainer(n_train=faces, epochs=epochs, rounds=rounds, image_size=image_size,
                           batch_size=batch_size, reporter=reporter)
    rate, setup = result["images_per_second"], result["setup"]
    reporter.out.print(f"trainer {rate['trainer']:.0f} images/s, bare loop {rate['bare']:.0f} images/s: "
                       f"{result['ratio']:.2f}x ({setup['backbone']}, {setup['image_size']} px, batch "
                       f"{setup['batch_size']}, {setup['faces']} faces x {setup['epochs']} epochs, best of "
                       f"{setup['rounds']}; trainer validation {result['seconds']['trainer_validation']:.2f} s "
                       f"timed apart)", soft_wrap=True, markup=False)
    if json_path is not None:
        write_json(json_path, result)


@bench_group.command("memory", context_settings={"ignore_unknown_options": True})
@click.option("--json", "json_path", type=click.Path(path_type=Path, dir_okay=False), default=None)
@click.argument("run_args", nargs=-1, type=click.UNPROCESSED)
def bench_memory_cmd(json_path: Path | None, run_args: tuple[str, ...]) -> None:
    """Peak resident memory of `occdistill run RUN_ARGS` (in a fresh process, nothing cached).

    Example: occdistill bench memory --dataset ferplus --data prepared/ferplus --epochs 1
    """
    from .bench.memory import run as bench_memory
    from .io import write_json
    from .report import RichReporter

    if any(a in ("--out", "--resume") or a.startswith(("--out=", "--resume=")) for a in run_args):
        raise UsageError("bench memory chooses the run directory itself; drop --out / --resume")
    reporter = RichReporter()
    reporter.info("training once in a child process to measure its peak memory ...")
    result = bench_memory(list(run_args))
    reporter.out.print(f"peak RSS {result['peak_rss_mib']:.0f} MiB in {result['seconds']:.0f} s: {result['command']}",
                       soft_wrap=True, markup=False)
    if json_path is not None:
        write_json(json_path, result)


def _debug_requested(args: list[str]) -> bool:
    """``--debug`` is a group option: it counts only before the command name."""
    for arg in args:
        if arg == "--debug":
            return True
        if not arg.startswith("-"):
            break
    return os.environ.get("OCCDISTILL_DEBUG") == "1"


def main(argv: list[str] | None = None) -> None:
    """Entry point: every failure becomes one line on stderr and a documented exit code."""
    from .report import RichReporter

    args = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_requested(args)
    reporter = RichReporter()
    if not args:
        args = ["--help"]
    code = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PluginLoadWarning)
        try:
            # without standalone mode, click returns the code of ``ctx.exit(code)`` instead of raising it
            returned = cli.main(args=args, prog_name="occdistill", standalone_mode=False, obj={"argv": args})
            code = returned if isinstance(returned, int) else 0
        except click.exceptions.Exit as exc:
            code = exc.exit_code
        except click.exceptions.Abort as exc:
            # click turns a bare Ctrl-C into Abort; work that keeps something raises Interrupted (below), which
            # says what it kept
            ctrl_c = isinstance(exc.__cause__ or exc.__context__, KeyboardInterrupt)
            reporter.error("interrupted" if ctrl_c else "aborted")
            code = EXIT_INTERRUPTED
        except click.ClickException as exc:
            if debug:
                raise
            reporter.error(exc.format_message().replace("\n", " "))
            code = exc.exit_code if exc.exit_code else EXIT_USAGE
        except OccdistillError as exc:
            if debug:
                raise
            reporter.error(str(exc))
            code = exc.exit_code
        except KeyboardInterrupt:  # one that reaches past click's own handlers
            reporter.error("interrupted")
            code = EXIT_INTERRUPTED
        except Exception as exc:  # a bug: still one line, with the way to see more
            if debug:
                raise
            first = str(exc).splitlines()[0] if str(exc) else ""
            reporter.error(f"{type(exc).__name__}: {first} (rerun with --debug for the traceback)")
            code = EXIT_RUNTIME
        finally:
            for w in caught:  # plugin load failures: one warning line each, through the reporter
                if issubclass(w.category, PluginLoadWarning):
                    reporter.warn(str(w.message))
    # other warnings are shown as Python would, once the recording has stopped (shown inside it, they
    # would be recorded again)
    for w in caught:
        if not issubclass(w.category, PluginLoadWarning):
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    sys.exit(code)


if __name__ == "__main__":
    main()
