"""The paper's protocol: teacher on clean faces -> baseline student and distilled student on occluded
faces (both initialised from the teacher) -> every model scored on the same occluded test faces.

``ProtocolRun`` holds one run, one method per step: ``preflight`` (build the plugins, once),
``load_data``, ``teacher``, ``baseline``, ``student`` and ``score``; ``run()`` takes them in order. Each
trained stage goes through ``stage``, which finds it in, or adds it to, the stage cache
(``protocol.stages``) under its cache key (``protocol.keys``). The protocol never prints: it talks to a
``Reporter`` (``protocol.reporting``). ``protocol.rundir.run_to_dir`` wraps a run in its run directory.
"""

from __future__ import annotations

import copy
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from .._version import __version__
from ..config import RunConfig
from ..data.augment import FaceAugment
from ..data.faceset import FaceSet
from ..data.mixing import PairMix
from ..data.paired import PairedFaces, occlude_all, to_tensor
from ..distillers.base import Distiller, key_settings, split_replica
from ..distillers.finetune import Finetune
from ..engine import distributed as ddp
from ..engine.cache import ModelCache
from ..engine.stage import EvalSet, StageContext, TeacherTable
from ..engine.trainer import (fit, gathered_outputs, mismatch_message, resolve_amp, resolve_device,
                              seed_everything)
from ..errors import OccdistillError, PluginError, RunFailed
from ..io import atomic_torch_save, pack_per_face
from ..models.network import FaceModel, build_model
from ..registry import registry
from .keys import resolved_settings, student_key, teacher_key, teacher_outputs_key
from .parts import Parts, build_parts
from .reporting import NullReporter, Reporter
from .stages import RESUME_DIR, StageCache

# The names under which the cache keys were known before they moved to ``protocol.keys``.
_teacher_key, _student_key = teacher_key, student_key

__all__ = ["RESUME_DIR", "Parts", "ProtocolRun", "RunData", "RunResult", "build_parts", "finish_run",
           "gap_closed", "preflight", "resolved_settings", "run"]

BASELINE = "finetune"  # the distiller whose student is the baseline; its stage is named "baseline"


@dataclass
class RunResult:
    """What a run gives back. ``metrics``: what metrics.json holds. ``histories``: stage name -> one
    record per epoch. ``models``: "teacher", "baseline" and "student" (``FaceModel``s on the run's
    device). ``task_state``: what a checkpoint needs to decode outputs (``task.state()``). ``run_dir``:
    the finished run directory (``run_to_dir`` on the writing process; None otherwise)."""

    metrics: dict[str, Any]
    histories: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    models: dict[str, FaceModel] = field(default_factory=dict)
    task_state: dict[str, Any] = field(default_factory=dict)
    run_dir: Path | None = None


def replica_seed(seed: int, replica: int) -> int:
    """The seed of replica ``replica`` of a student of a run with ``seed``: its own stream, not another
    run's seed (a ``SeedSequence`` child of the two)."""
    return int(np.random.SeedSequence([seed, replica]).generate_state(1)[0])


@dataclass
class RunData:
    """The faces of one run: training pairs (clean and occluded views of each face) and the four
    evaluation sets, whose occlusions depend on ``eval_seed`` alone (the same for every distiller)."""

    train: PairedFaces
    val_clean: EvalSet
    val_occluded: EvalSet
    test_clean: EvalSet
    test_occluded: EvalSet


def preflight(cfg: RunConfig) -> Parts:
    """Everything that can be checked before any data is loaded or file written: plugin names and
    options, the backbone at this image size, a ``--weights`` file, and the distiller's ``setup`` on
    that backbone (a copy of the distiller, so a layer it names by mistake fails now, not after the
    teacher has trained). Returns the built plugins."""
    parts = build_parts(cfg)
    resolve_amp(cfg.amp, resolve_device(cfg.device))  # --amp fp16 on a CPU: refused now, not at training
    channels = cfg.channels or parts.dataset.native_channels
    with torch.random.fork_rng(devices=[]):  # the probe draws no random number the run would see
        model = build_model(cfg.backbone, in_chans=channels, image_size=cfg.image_size, output_dim=1,
                            pretrained=cfg.pretrained, weights=cfg.weights, backbone_args=cfg.backbone_args)
        example = torch.zeros(2, channels, cfg.image_size, cfg.image_size)
        teacher = model if getattr(parts.distiller, "uses_teacher", False) else None
        try:
            copy.deepcopy(parts.distiller).setup(model.eval(), teacher, example)
        except OccdistillError:
            raise
        except Exception as exc:  # a plugin's own bug: one line naming it, not a traceback
            raise PluginError(f"distiller '{cfg.distiller}' from {parts.origins['distiller']} failed in setup() "
                              f"on an untrained {cfg.backbone} at {cfg.image_size} px: {type(exc).__name__}: {exc}"
                              ) from exc
    return parts


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


def finish_run(checkpoint_dir: Path) -> None:
    """After a run's files are all written: its stage states and finished stages are no longer needed."""
    import shutil

    if ddp.is_main():
        shutil.rmtree(Path(checkpoint_dir) / RESUME_DIR, ignore_errors=True)


class ProtocolRun:
    """One run of the protocol for ``cfg``.

    ``reporter``: where progress goes (None: nowhere). ``cache``: the run cache that trained stages are
    reused from and stored in (None: none). ``checkpoint_dir``: a run's ``checkpoints/``; each stage saves
    its state there as it trains, a new ``ProtocolRun`` with the same directory continues from it, and
    ``run`` writes the final weights there. ``discard_stale``: a stage state of another configuration
    is dropped instead of refused.

    Under torchrun the constructor joins the process group; ranks other than 0 then read the cache and
    report nothing. The plugins are built once, by ``preflight`` (which every step calls first).
    """

    def __init__(self, cfg: RunConfig, reporter: Reporter | None = None, cache: ModelCache | None = None, *,
                 checkpoint_dir: Path | None = None, discard_stale: bool = False):
        self.cfg = cfg
        self.device = resolve_device(ddp.setup(cfg.device))  # under torchrun: join the group, this rank's device
        cache = cache if cache is not None else ModelCache(None)
        reporter = reporter if reporter is not None else NullReporter()
        if not ddp.is_main():  # under torchrun, rank 0 alone writes files and reports; the others read
            cache, reporter = ModelCache(cache.root, read_only=True), NullReporter()
        self.cache, self.reporter = cache, reporter
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.stages = StageCache(cache, self.checkpoint_dir, writer=ddp.is_main(), every=cfg.checkpoint_every,
                                 discard_stale=discard_stale)
        self.parts: Parts | None = None
        #: ``resolved_settings``: for config.json and the cache keys, computed once by ``preflight``
        self.settings: dict[str, Any] = {}
        self.timings: dict[str, float] = {}
        self.histories: dict[str, list[dict[str, Any]]] = {}
        self.cached: dict[str, bool] = {}  # stage -> reused rather than trained
        self._started = time.perf_counter()
        self._data: RunData | None = None
        self._models: dict[str, FaceModel] = {}
        self._table: TeacherTable | None = None
        self._teacher_key: dict[str, Any] | None = None

    # -- the steps ------------------------------------------------------------------------------------
    def preflight(self) -> Parts:
        """Build the run's plugins (the first call only) and check what can be checked before any data
        is read: see the module function ``preflight``. Also resolves the settings and points the data
        set at the run cache (``FaceDataset.use_cache``)."""
        if self.parts is None:
            # plugins that draw initial parameters at construction draw them from the run's seed
            seed_everything(self.cfg.seed)
            parts = preflight(self.cfg)
            parts.dataset.use_cache(self.cache.root)  # None (no cache): nothing lasting is written
            self.settings = resolved_settings(self.cfg, parts)
            self.parts = parts
        return self.parts

    @property
    def channels(self) -> int:
        return self.cfg.channels or self.preflight().dataset.native_channels

    @property
    def teacher_key(self) -> dict[str, Any]:
        """The teacher's cache key, which every student's key embeds."""
        if self._teacher_key is None:
            self.preflight()
            self._teacher_key = teacher_key(self.cfg, self.settings)
        return self._teacher_key

    def load_data(self) -> RunData:
        """The splits, the training pairs and the clean/occluded evaluation sets (read once)."""
        if self._data is not None:
            return self._data
        cfg, parts = self.cfg, self.preflight()
        dataset, task, occlusion = parts.dataset, parts.task, parts.occlusion
        t0 = time.perf_counter()
        splits: dict[str, FaceSet] = {}
        bar = self.reporter.stage("data", sum(dataset.size(s) for s in ("train", "val", "test")))
        try:
            for split in ("train", "val", "test"):
                splits[split] = dataset.load(split, image_size=cfg.image_size, channels=self.channels,
                                             progress=bar.advance)
        finally:
            bar.close()
        task.setup(splits["train"])
        val_clean = EvalSet(to_tensor(splits["val"].images), task.targets(splits["val"]))
        with self._blame("occlusion", cfg.occlusion):
            val_occluded = occlude_all(splits["val"], occlusion, cfg.eval_seed)
            test_occluded = occlude_all(splits["test"], occlusion, cfg.eval_seed + 1)
        val_occ = EvalSet(to_tensor(val_occluded), val_clean.targets)
        test_clean = EvalSet(to_tensor(splits["test"].images), task.targets(splits["test"]))
        test_occ = EvalSet(to_tensor(test_occluded), test_clean.targets)
        train = PairedFaces(splits["train"], task.targets(splits["train"]), occlusion, flip=cfg.flip, seed=cfg.seed,
                            augment=FaceAugment(**cfg.augment) if cfg.augment else None)
        self._data = RunData(train, val_clean, val_occ, test_clean, test_occ)
        self.timings["data"] = time.perf_counter() - t0
        return self._data

    def teacher(self) -> FaceModel:
        """The teacher, trained on clean faces with the task loss (or reused), in eval mode."""
        if "teacher" not in self._models:
            cfg, data, key = self.cfg, self.load_data(), self.teacher_key

            def train() -> tuple[FaceModel, list[dict[str, Any]]]:
                seed_everything(cfg.seed)
                ctx = self._context("teacher", key, self._new_model(), "clean", data.val_clean, cfg.teacher_epochs,
                                    cfg.lr)
                return ctx.fit(Finetune(self.parts.task)), ctx.history

            teacher = self.stage("teacher", "teachers", key, train,
                                 template=lambda: self._new_model(initial_weights=False))
            self._models["teacher"] = teacher.eval()
        return self._models["teacher"]

    def baseline(self) -> FaceModel:
        """The baseline: the teacher fine-tuned on occluded faces with the task loss alone, no teacher."""
        if "baseline" not in self._models:
            cfg, data, teacher = self.cfg, self.load_data(), self.teacher()
            key = student_key(cfg, self.settings, self.teacher_key, BASELINE, {},
                              registry("distillers").get(BASELINE).origin, uses_teacher=False)

            def train() -> tuple[FaceModel, list[dict[str, Any]]]:
                seed_everything(cfg.seed + 1)
                ctx = self._context("baseline", key, self._student_init(), "occluded", data.val_occluded,
                                    cfg.student_epochs, cfg.student_lr)
                return ctx.fit(Finetune(self.parts.task)), ctx.history

            self._models["baseline"] = self.stage("baseline", "students", key, train,
                                                  template=lambda: copy.deepcopy(teacher))
        return self._models["baseline"]

    def student(self) -> FaceModel:
        """The run's distilled student, from the teacher. A distiller that declares ``is_baseline``
        (``finetune``) *is* the baseline: its student is the baseline's, not trained again."""
        if "student" not in self._models:
            distiller = self.preflight().distiller
            if distiller.is_baseline:
                self._models["student"] = self.baseline()
                self.histories["student"], self.timings["student"] = self.histories["baseline"], 0.0
                self.cached["student"] = self.cached["baseline"]
            else:
                self._models["student"] = self._distilled(self.cfg.distiller, "student", distiller,
                                                          self.settings["distiller"])
        return self._models["student"]

    def student_for(self, name: str, options: dict[str, Any] | None = None) -> FaceModel:
        """The student of distiller ``name``, built with ``options`` (its defaults when None), in this run:
        stage ``student:<name>``, from the stage cache or trained now. ``combined`` asks for its members
        so; with the options of a run of that distiller alone, it is that run's student (the same key).

        ``name:K`` (K >= 1) is replica K of that student: trained the same way from the same teacher, on its
        own draw of training order, occlusions and flips (a seed derived from the run's seed and K), as
        the ensemble control's second ``finetune`` (``members=finetune,finetune:1``)."""
        base, replica = split_replica(name)
        options = dict(options or {})
        dist, _ = registry("distillers").build(base, task=self.preflight().task, **options)
        settings = {**options, **key_settings(dist)}  # as resolved_settings keys a run of that distiller alone
        if replica == 0:
            return self.baseline() if dist.is_baseline else self._distilled(base, f"student:{base}", dist, settings)
        return self._distilled(base, f"student:{base}-{replica}", dist, {**settings, "replica": replica},
                               seed=replica_seed(self.cfg.seed, replica))

    def teacher_table(self) -> TeacherTable:
        """The teacher's outputs on every clean training face and flip: computed once per run, and kept in
        the run cache (``keys.teacher_outputs_key``) for later runs."""
        if self._table is None:
            teacher, data = self.teacher(), self.load_data()
            key = teacher_outputs_key(self.teacher_key, teacher)
            stored = self.stages.get_outputs(key)
            if stored is not None:
                self._table = TeacherTable(None, None, self.device, tensors=stored)
            else:
                self._table = TeacherTable(teacher, data.train, self.device)
                self.stages.put_outputs(key, self._table.logits, self._table.embeddings)
        return self._table

    def score(self) -> dict[str, Any]:
        """Every model on the test faces (the teacher on clean and occluded ones, the students on occluded
        ones), and what metrics.json holds."""
        cfg, task, data = self.cfg, self.preflight().task, self.load_data()
        models = (("teacher_clean", self.teacher(), data.test_clean),
                  ("teacher_occluded", self.teacher(), data.test_occluded),
                  ("baseline", self.baseline(), data.test_occluded), ("student", self.student(), data.test_occluded))
        t = time.perf_counter()
        bar = self.reporter.stage("evaluate", 4)
        try:
            scores, per_face = {}, {}
            for name, model, faces in models:
                outputs = gathered_outputs(model, faces, self.device)
                scores[name] = task.metrics(outputs, faces.targets)
                # what paired tests on the same faces compare (bench summaries): the student's alone, since
                # the baseline is the student of the same seed's finetune run
                outcome = task.per_face(outputs, faces.targets) if name == "student" else None
                if outcome is not None:
                    per_face[name] = pack_per_face(task.per_face_kind, outcome)
                bar.advance(1)
        finally:
            bar.close()
        self.timings["evaluate"] = time.perf_counter() - t
        self.timings["total"] = time.perf_counter() - self._started
        m = task.metric
        return {
            "task": cfg.task, "occlusion": cfg.occlusion, "distiller": cfg.distiller, "backbone": cfg.backbone,
            "dataset": cfg.dataset, "seed": cfg.seed, "metric": m, "higher_is_better": task.higher_is_better,
            "unit": task.unit.strip(),
            **{name: s[m] for name, s in scores.items()},
            "gap_closed": gap_closed(scores["student"][m], scores["baseline"][m], scores["teacher_clean"][m],
                                     task.higher_is_better),
            "all_metrics": scores,
            **({"per_face": per_face} if per_face else {}),
            "n_test": len(data.test_clean.targets), "n_train": len(data.train),
            "seconds": {k: round(v, 2) for k, v in self.timings.items()},
            "reused_from_cache": self.cached,
            "origins": self.parts.origins, "device": str(self.device),
            "versions": {"occlusion_distill": __version__, "torch": torch.__version__},
        }

    def run(self) -> RunResult:
        """Every step in order; with a checkpoint directory, the final weights are written there too
        (``checkpoints/resume/`` stays until the caller has written everything else: ``finish_run``)."""
        self.preflight()
        cfg = self.cfg
        self.reporter.info(f"{cfg.task} · {cfg.occlusion} · {cfg.distiller} · {cfg.backbone} on {cfg.dataset} "
                           f"({cfg.image_size}px, {'grey' if self.channels == 1 else 'RGB'}, device {self.device})")
        self.load_data()
        models = {"teacher": self.teacher(), "baseline": self.baseline(), "student": self.student()}
        metrics = self.score()
        task = self.parts.task
        if self.checkpoint_dir is not None and ddp.is_main():
            for name, model in models.items():
                atomic_torch_save({"state_dict": model.state_dict(), "task": task.state(),
                                   "backbone": cfg.backbone, "backbone_args": cfg.backbone_args,
                                   "image_size": cfg.image_size, "channels": self.channels},
                                  self.checkpoint_dir / f"{name}.pt")
        return RunResult(metrics=metrics, histories=self.histories, models=models, task_state=task.state())

    # -- the stage cache ------------------------------------------------------------------------------
    def stage(self, stage: str, kind: str, key: dict[str, Any],
              train: Callable[[], tuple[FaceModel, list[dict[str, Any]]]],
              template: Callable[[], FaceModel]) -> FaceModel:
        """Stage ``stage``'s model on the run's device: its stored weights loaded into ``template()`` when
        the stage cache holds ``key`` (this run's checkpoints first, then the run cache, under ``kind``),
        otherwise ``train()`` -> (model, history), which is then stored in both."""
        t = time.perf_counter()
        hit, source = self.stages.get(stage, kind, key)
        if hit is not None:
            model = template()
            try:
                model.load_state_dict(hit["state_dict"])
            except RuntimeError as exc:
                raise RunFailed(mismatch_message(f"stage '{stage}': the model stored in {source}", exc)) from None
            self.histories[stage] = hit["history"]
            self.reporter.info(f"{stage}: reused from {source}")
        else:
            model, self.histories[stage] = train()
            self.stages.put(stage, kind, key, model.state_dict(), self.histories[stage])
        self.cached[stage] = hit is not None
        self.timings[stage] = time.perf_counter() - t
        return model.to(self.device)

    # -- helpers --------------------------------------------------------------------------------------
    def _distilled(self, name: str, stage: str, dist: Distiller, settings: dict[str, Any],
                   seed: int | None = None) -> FaceModel:
        """A student of ``dist`` from the teacher; ``seed`` (a replica's) replaces the run's seed for its
        training order and its training faces' draws."""
        cfg, data, teacher = self.cfg, self.load_data(), self.teacher()
        key = student_key(cfg, self.settings, self.teacher_key, name, settings,
                          registry("distillers").get(name).origin, uses_teacher=dist.uses_teacher)

        def train() -> tuple[FaceModel, list[dict[str, Any]]]:
            seed_everything(cfg.seed + 2 if seed is None else seed)
            ctx = self._context(stage, key, self._student_init(), "occluded", data.val_occluded, cfg.student_epochs,
                                cfg.student_lr, teacher=teacher, seed=seed)
            ctx.student_for = self.student_for
            ctx.teacher_table = self.teacher_table
            with self._blame("distiller", name):
                model = dist.train_student(ctx)
            return model, ctx.history

        return self.stage(stage, "students", key, train, template=lambda: dist.student_template(teacher))

    def _new_model(self, initial_weights: bool = True) -> FaceModel:
        # A model about to receive cached weights needs no pretrained download or --weights read.
        cfg = self.cfg
        return build_model(cfg.backbone, in_chans=self.channels, image_size=cfg.image_size,
                           output_dim=self.parts.task.output_dim, pretrained=cfg.pretrained and initial_weights,
                           weights=cfg.weights if initial_weights else None, backbone_args=cfg.backbone_args)

    def _student_init(self) -> FaceModel:
        # every student starts from the teacher's weights, trainable (training a student freezes the teacher)
        return copy.deepcopy(self.teacher()).requires_grad_(True)

    def _context(self, stage: str, key: dict[str, Any], model: FaceModel, view: str, val: EvalSet, epochs: int,
                 lr: float, teacher: FaceModel | None = None, seed: int | None = None) -> StageContext:
        cfg, train, task = self.cfg, self.load_data().train, self.parts.task
        if seed is not None:  # the same faces, drawn from another seed (a replica)
            train = copy.copy(train)
            train.seed = seed
        seed = cfg.seed if seed is None else seed
        return StageContext(stage=stage, model=model, task=task, train=train, val=val,
                            view=view, epochs=epochs, batch_size=cfg.batch_size, lr=lr,
                            weight_decay=cfg.weight_decay, device=self.device, seed=seed,
                            num_workers=cfg.num_workers, teacher=teacher, progress=self.reporter.stage,
                            teacher_outputs=cfg.teacher_outputs, checkpoint=self.stages.checkpoint(stage, key),
                            amp=cfg.amp, compile=cfg.compile, trainer=fit,
                            # students only: the pair is mixed, and the teacher learns its clean faces unmixed
                            mix=PairMix(cfg.mix["mode"], cfg.mix["alpha"],
                                        None if getattr(task, "regression", False) else task.output_dim, seed=seed)
                            if cfg.mix and view == "occluded" else None)

    @contextmanager
    def _blame(self, kind: str, name: str) -> Iterator[None]:
        """Turn an exception escaping a plugin's code into a one-line failure naming it and its origin."""
        try:
            yield
        except OccdistillError:
            raise
        except Exception as exc:
            raise RunFailed(f"{kind} '{name}' from {self.parts.origins[kind]} failed: "
                            f"{type(exc).__name__}: {exc}") from exc


def run(cfg: RunConfig, reporter: Reporter | None = None, cache: ModelCache | None = None,
        checkpoint_dir: Path | None = None, discard_stale: bool = False) -> RunResult:
    """Run the whole protocol (``ProtocolRun(...).run()``). With ``checkpoint_dir`` each stage saves its
    state there as it trains and a rerun with the same directory continues from it; the final weights
    are written there too. For a complete run directory, see ``protocol.rundir.run_to_dir``."""
    return ProtocolRun(cfg, reporter, cache, checkpoint_dir=checkpoint_dir, discard_stale=discard_stale).run()
