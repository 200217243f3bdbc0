"""The paper's protocol: teacher on clean faces -> baseline student and distilled student on occluded
faces (both initialised from the teacher) -> every model scored on the same occluded test faces.

The engine never prints: it talks to a reporter (``report.NullReporter`` when used as a library).
"""

from __future__ import annotations

import copy
import hashlib
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch

from .._version import __version__
from ..config import RunConfig
from ..data.base import FaceDataset
from ..data.faceset import FaceSet
from ..data.paired import PairedFaces, occlude_all, to_tensor
from ..distillers.base import Distiller
from ..distillers.finetune import Finetune
from ..errors import OccdistillError, PluginError, RunFailed, UsageError
from ..models.network import FaceModel, build_model
from ..occlusions.base import Occlusion
from ..registry import registry
from ..tasks.base import Task
from ..engine import distributed as ddp
from ..engine.cache import ModelCache
from ..engine.checkpoint import StageCheckpoint
from ..io import atomic_torch_save, file_digest
from ..engine.stage import EvalSet, StageContext, TeacherTable
from ..engine.trainer import TRAINER_VERSION, evaluate, fit, resolve_amp, resolve_device, seed_everything

RESUME_DIR = "resume"  # under a run's checkpoints/: stage states and finished stages, until the run ends


@dataclass
class Parts:
    """The plugins of one run, built from the config."""

    task: Task
    occlusion: Occlusion
    distiller: Distiller
    dataset: FaceDataset
    origins: dict[str, str]


@dataclass
class RunResult:
    metrics: dict[str, Any]
    histories: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    models: dict[str, FaceModel] = field(default_factory=dict)
    task_state: dict[str, Any] = field(default_factory=dict)


def build_parts(cfg: RunConfig, cache_dir: Path | None = None) -> Parts:
    """Create every plugin of the run; bad names and bad options fail here, before any training."""
    task, t_entry = registry("tasks").build(cfg.task)
    occlusion, o_entry = registry("occlusions").build(cfg.occlusion, **cfg.occlusion_args)
    distiller, d_entry = registry("distillers").build(cfg.distiller, task=task, **cfg.distiller_args)
    ds_args = dict(cfg.dataset_args)
    if cfg.dataset == "synthfaces" and cache_dir is not None:
        ds_args.setdefault("cache_dir", str(cache_dir))
    dataset, ds_entry = registry("datasets").build(cfg.dataset, **ds_args)
    registry("backbones").get(cfg.backbone)  # unknown backbone: fail now, with suggestions
    for obj, kind, base in ((task, "task", Task), (occlusion, "occlusion", Occlusion),
                            (distiller, "distiller", Distiller), (dataset, "dataset", FaceDataset)):
        if not isinstance(obj, base):
            raise PluginError(f"{kind} plugin '{getattr(cfg, kind)}' must build a {base.__name__}, "
                              f"got {type(obj).__name__}")
    if task.label not in dataset.labels:
        raise UsageError(f"task '{cfg.task}' needs '{task.label}' labels; data set '{cfg.dataset}' "
                         f"has {', '.join(dataset.labels) or 'none'}")
    origins = {"task": t_entry.origin, "occlusion": o_entry.origin, "distiller": d_entry.origin,
               "dataset": ds_entry.origin, "backbone": registry("backbones").get(cfg.backbone).origin}
    return Parts(task, occlusion, distiller, dataset, origins)


_PRECISION = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def resolved_settings(cfg: RunConfig, parts: Parts) -> dict[str, Any]:
    """Every plugin's effective settings, defaults included, and what the run's ``auto`` settings resolve
    to here (device, training precision, processes): for config.json and the cache keys."""
    device = resolve_device(cfg.device)
    return {
        "occlusion": parts.occlusion.settings(),
        "task": parts.task.settings(),
        "distiller": {**cfg.distiller_args, **parts.distiller.hparams()},
        "dataset": {"args": {k: v for k, v in cfg.dataset_args.items() if k != "cache_dir"},
                    "fingerprint": parts.dataset.fingerprint()},
        "channels": cfg.channels or parts.dataset.native_channels,
        "device": str(device),
        "precision": _PRECISION[resolve_amp(cfg.amp, device)],
        "processes": ddp.world_size(),
        "origins": parts.origins,
    }


def preflight(cfg: RunConfig) -> Parts:
    """Everything that can be checked before any data is loaded or file written: plugin names and
    options, the backbone at this image size, a ``--weights`` file."""
    parts = build_parts(cfg)
    resolve_amp(cfg.amp, resolve_device(cfg.device))  # --amp fp16 on a CPU: refused now, not at training
    channels = cfg.channels or parts.dataset.native_channels
    build_model(cfg.backbone, in_chans=channels, image_size=cfg.image_size, output_dim=1,
                pretrained=cfg.pretrained, weights=cfg.weights)
    return parts


def _teacher_key(cfg: RunConfig, settings: dict[str, Any]) -> dict[str, Any]:
    """Everything that makes the teacher's weights. Besides data, model and optimisation, the numerics:
    training precision, ``--compile`` (fused kernels round differently), the device type (its kernels,
    and what ``auto`` precision means there) and the number of processes (BatchNorm statistics are per
    process). Students embed this key, and the cached teacher outputs are stored under it."""
    import timm

    return {
        "what": "teacher", "trainer": TRAINER_VERSION, "version": __version__, "timm": timm.__version__,
        "data": settings["dataset"], "origins": {k: v for k, v in settings["origins"].items()
                                                 if k in ("task", "dataset", "backbone")},
        "task": cfg.task, "task_settings": settings["task"],
        "image_size": cfg.image_size, "channels": settings["channels"],
        "backbone": cfg.backbone,
        "pretrained": cfg.pretrained, "weights": file_digest(cfg.weights) if cfg.weights else None,
        "epochs": cfg.teacher_epochs, "batch_size": cfg.batch_size, "lr": cfg.lr,
        "weight_decay": cfg.weight_decay, "flip": cfg.flip, "seed": cfg.seed,
        "precision": settings["precision"], "compile": cfg.compile,
        "device_type": torch.device(settings["device"]).type, "processes": settings["processes"],
    }


def _student_key(cfg: RunConfig, settings: dict[str, Any], teacher_key: dict[str, Any], distiller_name: str,
                 distiller_settings: dict[str, Any], distiller_origin: str, uses_teacher: bool = True) -> dict[str, Any]:
    return {
        "what": "student", "teacher": teacher_key, "occlusion": cfg.occlusion,
        "occlusion_settings": settings["occlusion"], "occlusion_origin": settings["origins"]["occlusion"],
        "distiller": distiller_name, "distiller_settings": distiller_settings,
        "distiller_origin": distiller_origin, "epochs": cfg.student_epochs, "lr": cfg.student_lr,
        "eval_seed": cfg.eval_seed,
        # a distiller learns from teacher outputs computed once in fp32 (cached) or at each step under the
        # training precision (online); the baseline never runs the teacher
        "teacher_outputs": cfg.teacher_outputs if uses_teacher else None,
    }


def gap_closed(student: float, baseline: float, teacher_clean: float, higher_is_better: bool = True) -> float | None:
    """Share of the baseline -> clean-teacher gap the student closed, or None when there is no gap.

    (student - baseline) / (teacher_clean - baseline) reads the same whether higher or lower is
    better (both differences flip together). It is undefined when the teacher on clean faces is not
    better than the baseline: then occlusion cost nothing that distillation could win back.
    """
    denom = teacher_clean - baseline
    if (denom <= 1e-12) if higher_is_better else (denom >= -1e-12):
        return None
    return (student - baseline) / denom


@contextmanager
def _blame(kind: str, name: str, parts: Parts) -> Iterator[None]:
    """Turn an exception escaping a plugin's code into a one-line failure naming it and its origin."""
    try:
        yield
    except OccdistillError:
        raise
    except Exception as exc:
        raise RunFailed(f"{kind} '{name}' from {parts.origins[kind]} failed: {type(exc).__name__}: {exc}") from exc


def finish_run(checkpoint_dir: Path) -> None:
    """After a run's files are all written: its stage states and finished stages are no longer needed."""
    import shutil

    if ddp.is_main():
        shutil.rmtree(Path(checkpoint_dir) / RESUME_DIR, ignore_errors=True)


def _safe(stage: str) -> str:
    return stage.replace(":", "-").replace("/", "-")


def run(cfg: RunConfig, reporter: Any, cache: ModelCache | None = None,
        checkpoint_dir: Path | None = None, discard_stale: bool = False) -> RunResult:
    """Run the whole protocol. With ``checkpoint_dir`` each stage saves its state there as it trains and
    a rerun with the same directory continues from it; the final weights are written there too."""
    from ..report import NullReporter

    device = resolve_device(ddp.setup(cfg.device))  # under torchrun: join the group, this rank's device
    cache = cache or ModelCache(None)
    if not ddp.is_main():  # under torchrun, rank 0 alone writes files and reports; the others read
        cache, reporter = ModelCache(cache.root, read_only=True), NullReporter()
    # finished stages of this run, so that a resumed run does not depend on the shared cache
    stages = ModelCache(checkpoint_dir / RESUME_DIR if checkpoint_dir is not None else None,
                        read_only=not ddp.is_main())
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    seed_everything(cfg.seed)
    parts = build_parts(cfg, cache.root)
    task, occlusion, distiller, dataset = parts.task, parts.occlusion, parts.distiller, parts.dataset
    if hasattr(dataset, "faces_dir"):  # resized faces go to this run's cache, or nowhere lasting (--no-cache)
        dataset.faces_dir = cache.root / "faces" if cache.root is not None else None
    channels = cfg.channels or dataset.native_channels
    reporter.info(f"{cfg.task} · {cfg.occlusion} · {cfg.distiller} · {cfg.backbone} on {cfg.dataset} "
                  f"({cfg.image_size}px, {'grey' if channels == 1 else 'RGB'}, device {device})")

    # Data: the splits, the clean/occluded evaluation sets (same occlusions for every run).
    t0 = time.perf_counter()
    splits: dict[str, FaceSet] = {}
    total = sum(dataset.size(s) for s in ("train", "val", "test"))
    bar = reporter.stage("data", total)
    try:
        for split in ("train", "val", "test"):
            splits[split] = dataset.load(split, image_size=cfg.image_size, channels=channels,
                                         progress=bar.advance)
    finally:
        bar.close()
    task.setup(splits["train"])
    val_clean = EvalSet(to_tensor(splits["val"].images), task.targets(splits["val"]))
    with _blame("occlusion", cfg.occlusion, parts):
        val_occluded = occlude_all(splits["val"], occlusion, cfg.eval_seed)
        test_occluded = occlude_all(splits["test"], occlusion, cfg.eval_seed + 1)
    val_occ = EvalSet(to_tensor(val_occluded), val_clean.targets)
    test_clean = EvalSet(to_tensor(splits["test"].images), task.targets(splits["test"]))
    test_occ = EvalSet(to_tensor(test_occluded), test_clean.targets)
    train = PairedFaces(splits["train"], task.targets(splits["train"]), occlusion,
                        flip=cfg.flip, seed=cfg.seed)
    timings["data"] = time.perf_counter() - t0

    def new_model(initial_weights: bool = True) -> FaceModel:
        # A model about to receive cached weights needs no pretrained download or --weights read.
        return build_model(cfg.backbone, in_chans=channels, image_size=cfg.image_size,
                           output_dim=task.output_dim, pretrained=cfg.pretrained and initial_weights,
                           weights=cfg.weights if initial_weights else None)

    def context(stage: str, key: dict[str, Any], model: FaceModel, view: str, val: EvalSet, epochs: int, lr: float,
                teacher: FaceModel | None = None) -> StageContext:
        checkpoint = None
        if checkpoint_dir is not None:
            checkpoint = StageCheckpoint(checkpoint_dir / RESUME_DIR / f"{_safe(stage)}.state.pt", key,
                                         every=cfg.checkpoint_every, writer=ddp.is_main(),
                                         discard_stale=discard_stale)
        return StageContext(stage=stage, model=model, task=task, train=train, val=val, view=view,
                            epochs=epochs, batch_size=cfg.batch_size, lr=lr, weight_decay=cfg.weight_decay,
                            device=device, seed=cfg.seed, num_workers=cfg.num_workers, teacher=teacher,
                            progress=reporter.stage, teacher_outputs=cfg.teacher_outputs, checkpoint=checkpoint,
                            amp=cfg.amp, compile=cfg.compile, trainer=fit)

    histories: dict[str, list[dict[str, Any]]] = {}
    cached: dict[str, bool] = {}

    def cached_stage(stage: str, kind: str, key: dict[str, Any], train_fn, template=None) -> FaceModel:
        t = time.perf_counter()
        hit = stages.get(_safe(stage), key)
        source = "this run's checkpoints (finished before an interruption)"
        if hit is None:
            hit, source = cache.get(kind, key), "the run cache"
        if hit is not None:
            model = new_model(initial_weights=False) if stage == "teacher" else \
                (template() if template is not None else copy.deepcopy(teacher))
            model.load_state_dict(hit["state_dict"])
            histories[stage] = hit["history"]
            reporter.info(f"{stage}: reused from {source}")
        else:
            model, histories[stage] = train_fn()
            cache.put(kind, key, model.state_dict(), histories[stage])
            stages.put(_safe(stage), key, model.state_dict(), histories[stage])
            if checkpoint_dir is not None and ddp.is_main():  # superseded by the finished stage
                (checkpoint_dir / RESUME_DIR / f"{_safe(stage)}.state.pt").unlink(missing_ok=True)
        cached[stage] = hit is not None
        timings[stage] = time.perf_counter() - t
        return model.to(device)

    # 1. Teacher on clean faces.
    settings = resolved_settings(cfg, parts)
    t_key = _teacher_key(cfg, settings)

    def train_teacher():
        seed_everything(cfg.seed)
        ctx = context("teacher", t_key, new_model(), "clean", val_clean, cfg.teacher_epochs, cfg.lr)
        return fit(ctx, Finetune(task)), ctx.history

    teacher: FaceModel = cached_stage("teacher", "teachers", t_key, train_teacher)
    teacher.eval()

    tables: dict[str, TeacherTable] = {}

    def teacher_table() -> TeacherTable:
        """The teacher's outputs on every clean training face and flip: once per run, and kept in the run
        cache under the teacher's key (which fixes the data, image size and channels) for later runs."""
        if "table" not in tables:
            # the weights' digest too: outputs must come from exactly this teacher, even one retrained
            digest = hashlib.sha256()
            for name, tensor in sorted(teacher.state_dict().items()):
                digest.update(name.encode())
                digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
            key = {"what": "teacher-outputs", "teacher": t_key, "weights": digest.hexdigest()}
            hit = cache.get("teacher-outputs", key)
            if hit is not None:
                tables["table"] = TeacherTable(None, None, device, tensors=(hit["state_dict"]["logits"],
                                                                             hit["state_dict"]["embeddings"]))
            else:
                tables["table"] = TeacherTable(teacher, train, device)
                cache.put("teacher-outputs", key, {"logits": tables["table"].logits,
                                                    "embeddings": tables["table"].embeddings}, [])
        return tables["table"]

    def student_init() -> FaceModel:
        # every student starts from the teacher's weights, trainable (training a student freezes the teacher)
        return copy.deepcopy(teacher).requires_grad_(True)

    # 2. Baseline: the teacher fine-tuned on occluded faces, no teacher signal.
    base_key = _student_key(cfg, settings, t_key, "finetune", {}, registry("distillers").get("finetune").origin,
                            uses_teacher=False)

    def train_baseline():
        seed_everything(cfg.seed + 1)
        ctx = context("baseline", base_key, student_init(), "occluded", val_occ, cfg.student_epochs,
                      cfg.student_lr)
        return fit(ctx, Finetune(task)), ctx.history

    baseline = cached_stage("baseline", "students", base_key, train_baseline)

    # 3. Distilled student, also from the teacher; ``finetune`` *is* the baseline.
    def distilled(name: str, stage: str, dist: Distiller | None = None) -> FaceModel:
        """The student of distiller ``name``: from the cache, or trained (``combined`` asks for its members)."""
        if dist is None:
            dist, _ = registry("distillers").build(name, task=task)
        if type(dist) is Finetune:
            return baseline
        origin = registry("distillers").get(name).origin
        key = _student_key(cfg, settings, t_key, name, settings["distiller"] if stage == "student" else
                           dist.hparams(), origin, uses_teacher=dist.uses_teacher)

        def train_student():
            seed_everything(cfg.seed + 2)
            ctx = context(stage, key, student_init(), "occluded", val_occ, cfg.student_epochs,
                          cfg.student_lr, teacher=teacher)
            ctx.student_for = lambda member: distilled(member, f"student:{member}")
            ctx.teacher_table = teacher_table
            with _blame("distiller", name, parts):
                model = dist.train_student(ctx)
            return model, ctx.history

        return cached_stage(stage, "students", key, train_student,
                            template=lambda: dist.student_template(teacher))

    if type(distiller) is Finetune:
        student, histories["student"], timings["student"] = baseline, histories["baseline"], 0.0
        cached["student"] = cached["baseline"]
    else:
        student = distilled(cfg.distiller, "student", distiller)

    # 4. Scores on the test split.
    t = time.perf_counter()
    bar = reporter.stage("evaluate", 4)
    try:
        scores = {}
        for name, model, data in (("teacher_clean", teacher, test_clean), ("teacher_occluded", teacher, test_occ),
                                  ("baseline", baseline, test_occ), ("student", student, test_occ)):
            scores[name] = evaluate(model, data, task, device)
            bar.advance(1)
    finally:
        bar.close()
    timings["evaluate"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t_all

    m = task.metric
    metrics: dict[str, Any] = {
        "task": cfg.task, "occlusion": cfg.occlusion, "distiller": cfg.distiller, "backbone": cfg.backbone,
        "dataset": cfg.dataset, "seed": cfg.seed, "metric": m, "higher_is_better": task.higher_is_better,
        "unit": task.unit.strip(),
        **{name: s[m] for name, s in scores.items()},
        "gap_closed": gap_closed(scores["student"][m], scores["baseline"][m], scores["teacher_clean"][m],
                                 task.higher_is_better),
        "all_metrics": scores,
        "n_test": len(test_clean.targets), "n_train": len(train),
        "seconds": {k: round(v, 2) for k, v in timings.items()},
        "reused_from_cache": cached,
        "origins": parts.origins, "device": str(device),
        "versions": {"occlusion_distill": __version__, "torch": torch.__version__},
    }
    models = {"teacher": teacher, "baseline": baseline, "student": student}
    if checkpoint_dir is not None and ddp.is_main():

        # checkpoints/resume/ stays until the caller has written everything else (then finish_run)
        for name, model in models.items():
            atomic_torch_save({"state_dict": model.state_dict(), "task": task.state(),
                               "backbone": cfg.backbone, "image_size": cfg.image_size, "channels": channels},
                              checkpoint_dir / f"{name}.pt")
    return RunResult(metrics=metrics, histories=histories, models=models, task_state=task.state())
