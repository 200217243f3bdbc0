"""One training loop for every stage: AdamW + one-cycle, best epoch on validation, seeded order.

``StageTrainer`` is the loop in its parts (setup, restore, one epoch, validate, snapshot); ``fit(ctx,
criterion)`` runs it. Loss terms are summed on the device and the loss's finiteness is kept in a device
flag, read at checkpoint points and at the end of each epoch (on CPU, where reading it costs nothing,
at every step): a GPU is not stopped by a host sync at each step.
"""

from __future__ import annotations

import copy
import json
import math
import random
import signal
import threading
import time
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Sampler

from ..errors import Interrupted, RunFailed, UsageError
from ..models.network import FaceModel, ModelOutput
from ..tasks.base import Task
from . import distributed as ddp
from .checkpoint import rng_state, set_rng_state
from .features import FeatureTap
from .stage import EvalSet, StageContext, TeacherTable, TrainingDiverged, better_score

# bump when a change alters what a given config trains (invalidates caches). 2: the face order of an
# epoch is drawn from (seed, epoch) alone, so that a stage can resume in the middle of an epoch.
TRAINER_VERSION = 2


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UsageError(f"unknown device '{name}': {str(exc).splitlines()[0]}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available here (use --device cpu or auto)")
    return device


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 256) -> np.ndarray:
    model.eval()
    outs = []
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size].to(device).contiguous(memory_format=torch.channels_last)
        outs.append(model(x).logits.float().cpu())
    if not outs:  # an empty share (more ranks than faces)
        return np.zeros((0, model.head.out_features), np.float32)
    return torch.cat(outs).numpy()


def mismatch_message(what: str, exc: RuntimeError) -> str:
    """One line for stored weights that do not fit the network they are loaded into: the first of
    PyTorch's complaints, and what to do."""
    detail = str(exc).split("\n")[1].strip() if "\n" in str(exc) else str(exc)
    return (f"{what} does not fit this network ({detail[:160]}); it was made by another version of the "
            f"network: start the run afresh (--overwrite) or use another --cache-dir")


def gathered_outputs(model: nn.Module, data: EvalSet, device: torch.device) -> np.ndarray:
    """(N, output_dim) float32 outputs of ``model`` on every face of ``data``. Under torchrun each rank
    predicts a contiguous share of the faces and the shares are gathered, so every rank holds all of them."""
    world = ddp.world_size()
    if world == 1:
        return predict(model, data.images, device)
    ddp.sync_buffers(model)  # BatchNorm statistics of rank 0 everywhere: one model, however it is split
    n = len(data.images)
    bounds = [n * r // world for r in range(world + 1)]
    mine = data.images[bounds[ddp.rank()]:bounds[ddp.rank() + 1]]
    return ddp.all_gather_rows(predict(model, mine, device).astype(np.float32))


def evaluate(model: nn.Module, data: EvalSet, task: Task, device: torch.device) -> dict[str, float]:
    """The task's metrics on ``data`` (``gathered_outputs``: the same on every rank under torchrun)."""
    return task.metrics(gathered_outputs(model, data, device), data.targets)


class EpochOrder(Sampler[int]):
    """The faces of one epoch in an order drawn from (seed, epoch) alone, this rank's share of it, from
    position ``start`` on: a stage resumed in the middle of an epoch sees exactly the faces it had left."""

    def __init__(self, n: int, seed: int, epoch: int, rank: int = 0, world: int = 1, start: int = 0):
        self.n, self.seed, self.epoch, self.rank, self.world, self.start = n, seed, epoch, rank, world, start

    def share(self) -> int:
        return -(-self.n // self.world)

    def __iter__(self):
        g = torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, self.epoch, 17]).generate_state(1)[0]))
        order = torch.randperm(self.n, generator=g)
        if self.world > 1:  # wrap around so that every rank gets as many faces (as DistributedSampler does)
            order = torch.cat([order, order[:self.share() * self.world - self.n]])[self.rank::self.world]
        return iter(order[self.start:].tolist())

    def __len__(self) -> int:
        return max(0, self.share() - self.start)


class _StopRequest:
    """Ctrl-C while a stage trains: finish the step, save a checkpoint, stop. A second Ctrl-C stops at once."""

    def __init__(self, enabled: bool):
        self.requested = False
        self._first = 0.0
        self._old = None
        if enabled and threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame) -> None:
        now = time.monotonic()
        # under torchrun a Ctrl-C arrives twice, from the terminal and from torchrun: one second apart counts once
        if self.requested and now - self._first > 1.0:
            raise KeyboardInterrupt
        if not self.requested:
            self.requested, self._first = True, now

    def agreed(self, sync_point: bool = True) -> bool:
        """Whether any rank was asked to stop: every rank then stops at the same step. Under torchrun the
        ranks are asked (an all-reduce) only at ``sync_point``s, checkpoint points and epoch ends."""
        if ddp.world_size() == 1:
            return self.requested
        if not sync_point:
            return False
        return ddp.sum_across({"stop": float(self.requested)})["stop"] > 0

    def restore(self) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def _quiet_worker(worker_id: int) -> None:
    """Loader workers leave Ctrl-C to the main process, which saves a checkpoint before stopping."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def resolve_amp(name: str, device: torch.device) -> torch.dtype | None:
    """``auto``: bf16 on a GPU that has it, none on CPU; ``bf16``, ``fp16`` (GPU only) or ``off``."""
    if name == "off" or (name == "auto" and device.type != "cuda"):
        return None
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if name == "fp16" and device.type != "cuda":
        raise UsageError("--amp fp16 needs a GPU; on CPU use --amp bf16 or off")
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[name]


class StageTrainer:
    """The training of one stage: ``ctx.model`` with ``criterion`` (a distiller) over ``ctx.epochs``.

    ``setup`` builds the optimiser, schedule, scaler, DDP and compile wrappers, the teacher's outputs
    (looked up or online) and the feature hooks a distiller declares; ``restore`` continues from a
    checkpoint's state; ``train_epoch`` runs one epoch (or its rest); ``validate`` scores it and keeps the
    best weights; ``snapshot`` is the state a checkpoint holds; ``close`` removes the hooks and the Ctrl-C
    handler. ``run`` does all of it and returns the model with its best validation weights.
    """

    def __init__(self, ctx: StageContext, criterion: nn.Module):
        self.ctx, self.criterion = ctx, criterion
        self.device = ctx.device
        self.rank, self.world = ddp.rank(), ddp.world_size()
        self.start_epoch, self.start_batch, self.step = 0, 0, 0
        self.sums: dict[str, torch.Tensor] = {}  # float64 on the device: the same sums as Python floats
        # MPS has no float64: there the terms are summed on the CPU (a copy per step, as before)
        self.sum_device = torch.device("cpu") if ctx.device.type == "mps" else None
        self.best_score: float | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.tap: FeatureTap | None = None
        self.stop: _StopRequest | None = None
        self.progress: Any = None
        # reading a flag on the CPU costs nothing: there a non-finite loss stops the stage at its step,
        # before the optimiser takes it; on a GPU at the next checkpoint point or the end of the epoch
        self.check_every_step = ctx.device.type == "cpu"
        # the first step whose loss was not finite (0: none) and that loss, kept on the device
        self._bad_step: torch.Tensor | None = None
        self._bad_loss: torch.Tensor | None = None

    # -- setup ------------------------------------------------------------------------------------------
    def setup(self) -> None:
        ctx, device, criterion = self.ctx, self.device, self.criterion
        # channels-last runs the convolutions of small faces markedly faster, on CPU as on GPU
        self.model = ctx.model.to(device, memory_format=torch.channels_last)
        criterion.to(device)
        teacher = ctx.teacher
        self.uses_teacher = bool(getattr(criterion, "uses_teacher", False))
        if self.uses_teacher:
            if teacher is None:
                raise RunFailed(f"stage '{ctx.stage}': the distiller needs a teacher")
            teacher = teacher.to(device).eval()
            for p in teacher.parameters():
                p.requires_grad_(False)
        self.teacher = teacher
        if callable(getattr(criterion, "setup", None)):
            # before the optimiser: what the distiller builds here (a regressor) trains with the student
            criterion.setup(self.model, teacher if self.uses_teacher else None,
                            ctx.val.images[:2].to(device).contiguous(memory_format=torch.channels_last))
            criterion.to(device)
        layers = tuple(getattr(criterion, "feature_layers", ()) or ())
        if layers:
            self.tap = FeatureTap(layers, self.model, teacher if self.uses_teacher else None)
        # the feature maps of the teacher exist only when it runs: declared layers mean online outputs
        # and a mixed batch's clean view is new: no stored output fits it
        online = getattr(criterion, "teacher_outputs", "cached") == "online" or bool(layers) \
            or ctx.teacher_outputs == "online" or ctx.mix is not None
        self.table = None
        if self.uses_teacher and not online and getattr(ctx.train, "deterministic_clean", False):
            self.table = ctx.teacher_table() if ctx.teacher_table is not None else TeacherTable(teacher, ctx.train, device)
        ctx.train.need_clean = ctx.view == "clean" or (self.uses_teacher and self.table is None)
        ctx.train.need_occluded = ctx.view == "occluded"

        params = [p for p in list(self.model.parameters()) + list(criterion.parameters()) if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=ctx.lr, weight_decay=ctx.weight_decay)
        self.per_rank = max(1, ctx.batch_size // self.world)  # the global batch is split over the ranks
        share = EpochOrder(len(ctx.train), ctx.seed, 0, self.rank, self.world).share()
        self.drop_last = share > self.per_rank  # a batch of one would break BatchNorm
        self.per_epoch = share // self.per_rank if self.drop_last else -(-share // self.per_rank)
        self.steps = ctx.epochs * self.per_epoch
        # OneCycleLR divides by zero when its warm-up is exactly one step (pct_start x steps == 1)
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(self.optimizer, max_lr=ctx.lr,
                                                             total_steps=max(self.steps, 1),
                                                             pct_start=0.25 if self.steps != 4 else 0.3)
        self.amp = resolve_amp(ctx.amp, device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp == torch.float16)
        net: nn.Module = self.model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            net = DistributedDataParallel(self.model, device_ids=[device.index] if device.type == "cuda" else None)
        if ctx.compile:
            net = torch.compile(net)
        self.net = net
        self.every = ctx.checkpoint.every if ctx.checkpoint is not None else 0

    def restore(self, saved: dict[str, Any]) -> None:
        """Continue from a checkpoint's state (``snapshot``); ``UsageError`` when it was saved on another
        number of processes."""
        ctx = self.ctx
        if saved.get("world_size", 1) != self.world:
            raise UsageError(f"stage '{ctx.stage}' was checkpointed on {saved.get('world_size', 1)} process(es); "
                             f"resume it on as many (now {self.world})")
        try:
            self.model.load_state_dict(saved["model"])
        except RuntimeError as exc:  # same key, another network: a backbone whose defaults changed since
            raise RunFailed(mismatch_message(f"stage '{ctx.stage}': its checkpoint", exc)) from None
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.scaler.load_state_dict(saved["scaler"])
        self.criterion.load_state_dict(saved["criterion"])
        set_rng_state(saved["rng"])
        self.start_epoch, self.start_batch, self.step = saved["epoch"], saved["batch"], saved["step"]
        # the saved sums are over every rank: rank 0 carries them on, the others restart at 0
        self.sums = {k: torch.tensor(v if self.rank == 0 else 0.0, dtype=torch.float64,
                                     device=self.sum_device or self.device)
                     for k, v in saved["sums"].items()}
        self.best_score, self.best_state = saved["best_score"], saved["best_state"]
        ctx.history[:] = json.loads(saved["history"])

    # -- the loop ---------------------------------------------------------------------------------------
    def snapshot(self, epoch: int, batch: int) -> dict[str, Any]:
        """The whole state at ``batch`` of ``epoch`` (both 0-based; batch 0 of the next epoch at an end)."""
        # every rank reaches each save point at the same step, so the loss sums can be added up here;
        # history travels as JSON (a plugin's metrics may be numpy scalars, which weights-only loading refuses)
        return {"stage": self.ctx.stage, "epoch": epoch, "batch": batch, "step": self.step, "world_size": self.world,
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "criterion": self.criterion.state_dict(), "rng": rng_state(), "sums": ddp.sum_across(self._sums()),
                "best_score": None if self.best_score is None else float(self.best_score),
                "best_state": self.best_state, "history": json.dumps(self.ctx.history, default=float)}

    def _sums(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.sums.items()}

    def _save(self, epoch: int, batch: int) -> None:
        self.check_finite()  # never a checkpoint with weights that a non-finite loss stepped
        if self.ctx.checkpoint is not None:
            self.ctx.checkpoint.save(self.snapshot(epoch, batch))

    def _note_loss(self, loss: torch.Tensor) -> None:
        """Remember the first step whose loss is not finite, without reading anything back from the device."""
        bad = ~torch.isfinite(loss.detach())
        if self._bad_step is None:
            self._bad_step = torch.zeros((), dtype=torch.int64, device=loss.device)
            self._bad_loss = torch.zeros((), dtype=torch.float32, device=loss.device)
        first = bad & (self._bad_step == 0)
        self._bad_step = torch.where(first, self.step + 1, self._bad_step)
        self._bad_loss = torch.where(first, loss.detach().float(), self._bad_loss)

    def check_finite(self) -> None:
        """``TrainingDiverged`` when a loss since the stage (or its resumption) began was NaN or infinite."""
        if self._bad_step is None:
            return
        step = int(self._bad_step)
        if step:
            ckpt = self.ctx.checkpoint
            raise TrainingDiverged(
                f"stage '{self.ctx.stage}': the loss became {float(self._bad_loss)} at epoch "
                f"{(step - 1) // max(self.per_epoch, 1) + 1}, step {step}; "
                + (ckpt.describe() + "; " if ckpt else "") + "try a lower learning rate")

    def _loader(self, epoch: int, first: int) -> DataLoader:
        ctx = self.ctx
        return DataLoader(ctx.train, batch_size=self.per_rank,
                          sampler=EpochOrder(len(ctx.train), ctx.seed, epoch, self.rank, self.world, first * self.per_rank),
                          num_workers=ctx.num_workers, drop_last=self.drop_last, pin_memory=self.device.type == "cuda",
                          worker_init_fn=_quiet_worker if ctx.num_workers else None,
                          # the loader's own seed from its own generator: the global RNG stream stays
                          # the same whether an epoch starts at its beginning or is resumed part-way
                          generator=torch.Generator().manual_seed(ctx.seed * 1000 + epoch))

    def _teacher_outputs(self, batch: dict[str, torch.Tensor]) -> ModelOutput | None:
        if self.table is not None:
            return self.table.lookup(batch["index"], batch["flipped"])
        if not self.uses_teacher:
            return None
        with torch.no_grad():
            out = self.teacher(batch["clean"].to(self.device, non_blocking=True))
        return out._replace(features=self.tap.take("teacher")) if self.tap is not None else out

    def train_epoch(self, epoch: int, first_batch: int = 0) -> None:
        """Epoch ``epoch`` (0-based) from its batch ``first_batch`` on; ``Interrupted`` after saving a
        checkpoint when Ctrl-C was pressed, ``TrainingDiverged`` on a non-finite loss, ``RunFailed`` when the
        GPU runs out of memory."""
        ctx, device, criterion = self.ctx, self.device, self.criterion
        ctx.train.set_epoch(epoch)
        if first_batch == 0:
            self.sums = {}
        self.model.train()
        views = (ctx.view, "clean") if ctx.view != "clean" and ctx.train.need_clean else (ctx.view,)
        for b, batch in enumerate(self._loader(epoch, first_batch), start=first_batch):
            if ctx.mix is not None:
                batch = ctx.mix(batch, views, epoch, b)
            x = batch[ctx.view].to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            y = batch["target"].to(device, non_blocking=True)
            try:
                with torch.autocast(device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
                    out = self.net(x)
                    if self.tap is not None:
                        out = out._replace(features=self.tap.take("student"))
                    terms = criterion(out, y, self._teacher_outputs(batch))
                loss = terms["loss"]
                self._note_loss(loss)
                if self.check_every_step:
                    self.check_finite()
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
                if self.world > 1:
                    ddp.average_gradients(criterion.parameters())
                self.scaler.step(self.optimizer)
                self.scaler.update()
            except torch.cuda.OutOfMemoryError as exc:
                raise RunFailed(f"stage '{ctx.stage}': out of GPU memory at batch size {ctx.batch_size}; try "
                                f"--batch-size {max(1, ctx.batch_size // 2)}") from exc
            self.scheduler.step()
            self.step += 1
            for k, v in terms.items():
                v = v.detach().to(self.sum_device or v.device, torch.float64)
                self.sums[k] = self.sums[k] + v if k in self.sums else v
            if self.progress:
                self.progress.advance(1)
            due = bool(self.every) and self.step % self.every == 0 and b + 1 < self.per_epoch
            requested = self.stop.agreed(sync_point=due or b + 1 >= self.per_epoch)
            if requested or due:
                self._save(epoch, b + 1)
                if requested:
                    raise Interrupted(f"interrupted in stage '{ctx.stage}' at epoch {epoch + 1}, step {self.step}; "
                                      + ctx.checkpoint.describe())
        self.check_finite()

    def validate(self, epoch: int) -> float:
        """Score the model on the validation faces after epoch ``epoch`` (0-based), add the epoch's record
        to the history, keep the weights when they are the best so far; returns the score."""
        ctx = self.ctx
        val = evaluate(self.model, ctx.val, ctx.task, self.device)
        score = val[ctx.task.metric]
        means = ddp.sum_across({k: v / max(self.per_epoch, 1) for k, v in self._sums().items()})
        ctx.history.append({"epoch": epoch + 1, **{f"train_{k}": v / self.world for k, v in means.items()},
                            **{f"val_{k}": v for k, v in val.items()}, "lr": self.scheduler.get_last_lr()[0]})
        if better_score(ctx.task, score, self.best_score):
            self.best_score = score
            self.best_state = copy.deepcopy(self.model.state_dict())
        return score

    def close(self) -> None:
        if self.tap is not None:
            self.tap.remove()
            self.tap = None
        if self.stop is not None:
            self.stop.restore()
        if self.progress:
            self.progress.close()

    def run(self) -> FaceModel:
        ctx = self.ctx
        try:
            self.setup()
            saved = ctx.checkpoint.load() if ctx.checkpoint is not None else None
            if saved is not None:
                self.restore(saved)
            self.stop = _StopRequest(enabled=ctx.checkpoint is not None)
            self.progress = ctx.progress(ctx.stage, total=self.steps) if ctx.progress else None
            if self.progress and self.step:
                self.progress.advance(self.step)
            for epoch in range(self.start_epoch, ctx.epochs):
                self.train_epoch(epoch, self.start_batch if epoch == self.start_epoch else 0)
                score = self.validate(epoch)
                self._save(epoch + 1, 0)
                if self.progress:
                    best = "none yet" if self.best_score is None else f"{self.best_score:.1f}"
                    self.progress.note(f"ep {epoch + 1}/{ctx.epochs} val {ctx.task.metric} {score:.1f} (best {best})")
            # a Ctrl-C during the last evaluation: the epoch's checkpoint is saved already
            if self.stop.agreed() and ctx.checkpoint is not None:
                raise Interrupted(f"interrupted in stage '{ctx.stage}' after its last epoch; " + ctx.checkpoint.describe())
        finally:
            self.close()
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        if self.best_score is None or not math.isfinite(self.best_score):
            raise TrainingDiverged(f"stage '{ctx.stage}': no finite validation score")
        return self.model


def fit(ctx: StageContext, criterion: nn.Module) -> FaceModel:
    """Train ``ctx.model`` with ``criterion`` (a distiller); returns it with its best validation weights.

    With ``ctx.checkpoint`` the stage saves its whole state after every epoch (and every N steps), resumes
    from a saved state, and saves one on Ctrl-C before stopping. Raises ``TrainingDiverged`` (a non-finite
    loss, or no finite validation score), ``Interrupted`` (Ctrl-C, after the checkpoint) and ``RunFailed``
    (out of GPU memory; no teacher for a distiller that needs one). The context is left as it was given;
    the feature hooks a distiller declares are removed however the stage ends.
    """
    return StageTrainer(ctx, criterion).run()
