"""One training loop for every stage: AdamW + one-cycle, best epoch on validation, seeded order."""

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
from .checkpoint import rng_state, set_rng_state
from .stage import EvalSet, StageContext, TeacherTable

# bump when a change alters what a given config trains (invalidates caches). 2: the face order of an
# epoch is drawn from (seed, epoch) alone, so that a stage can resume in the middle of an epoch.
TRAINER_VERSION = 2


class TrainingDiverged(RunFailed):
    """The loss became NaN or infinite."""


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


def evaluate(model: nn.Module, data: EvalSet, task: Task, device: torch.device) -> dict[str, float]:
    """The task's metrics on ``data``. Under torchrun each rank predicts a contiguous share of the faces and
    the predictions are gathered, so every rank computes the same metrics over all of them."""
    from . import distributed as ddp

    world = ddp.world_size()
    if world == 1:
        return task.metrics(predict(model, data.images, device), data.targets)
    ddp.sync_buffers(model)  # BatchNorm statistics of rank 0 everywhere: one model, however it is split
    n = len(data.images)
    bounds = [n * r // world for r in range(world + 1)]
    mine = data.images[bounds[ddp.rank()]:bounds[ddp.rank() + 1]]
    outputs = ddp.all_gather_rows(predict(model, mine, device).astype(np.float32))
    return task.metrics(outputs, data.targets)


def better_score(task: Task, new: float, old: float | None) -> bool:
    """Whether validation score ``new`` beats the best so far (``old``, None before the first). A NaN or
    infinite score never does and is never a best to beat (a checkpoint may hold one), so a stage keeps
    its first finite epoch: NaN compares False with everything and would otherwise stick as the best."""
    if not math.isfinite(new):
        return False
    if old is None or not math.isfinite(old):
        return True
    return new > old if task.higher_is_better else new < old


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

    def agreed(self) -> bool:
        """Whether any rank was asked to stop: every rank then stops at the same step."""
        from . import distributed as ddp

        if ddp.world_size() == 1:
            return self.requested
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


def fit(ctx: StageContext, criterion: nn.Module) -> FaceModel:
    """Train ``ctx.model`` with ``criterion`` (a distiller); returns it with its best validation weights.

    With ``ctx.checkpoint`` the stage saves its whole state after every epoch (and every N steps), resumes
    from a saved state, and saves one on Ctrl-C before stopping.
    """
    from . import distributed as ddp

    device = ctx.device
    # channels-last runs the convolutions of small faces markedly faster, on CPU as on GPU
    model = ctx.model.to(device, memory_format=torch.channels_last)
    criterion = criterion.to(device)
    teacher = ctx.teacher
    uses_teacher = bool(getattr(criterion, "uses_teacher", False))
    if uses_teacher:
        if teacher is None:
            raise RunFailed(f"stage '{ctx.stage}': the distiller needs a teacher")
        teacher = teacher.to(device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    table = None
    if uses_teacher and ctx.teacher_outputs == "cached" and getattr(ctx.train, "deterministic_clean", False):
        table = ctx.teacher_table() if ctx.teacher_table is not None else TeacherTable(teacher, ctx.train, device)
    ctx.train.need_clean = ctx.view == "clean" or (uses_teacher and table is None)
    ctx.train.need_occluded = ctx.view == "occluded"

    params = [p for p in list(model.parameters()) + list(criterion.parameters()) if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=ctx.lr, weight_decay=ctx.weight_decay)
    rank, world = ddp.rank(), ddp.world_size()
    per_rank = max(1, ctx.batch_size // world)  # the global batch is split over the ranks
    share = EpochOrder(len(ctx.train), ctx.seed, 0, rank, world).share()
    drop_last = share > per_rank  # a batch of one would break BatchNorm
    per_epoch = share // per_rank if drop_last else -(-share // per_rank)
    steps = ctx.epochs * per_epoch
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=ctx.lr, total_steps=max(steps, 1),
                                                    pct_start=0.25)
    amp = resolve_amp(ctx.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    net: nn.Module = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if ctx.compile:
        net = torch.compile(net)

    start_epoch, start_batch, step = 0, 0, 0
    sums: dict[str, float] = {}
    best_score: float | None = None
    best_state: dict[str, torch.Tensor] | None = None
    saved = ctx.checkpoint.load() if ctx.checkpoint is not None else None
    if saved is not None:
        if saved.get("world_size", 1) != world:
            raise UsageError(f"stage '{ctx.stage}' was checkpointed on {saved.get('world_size', 1)} process(es); "
                             f"resume it on as many (now {world})")
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        scaler.load_state_dict(saved["scaler"])
        criterion.load_state_dict(saved["criterion"])
        set_rng_state(saved["rng"])
        start_epoch, start_batch, step = saved["epoch"], saved["batch"], saved["step"]
        # the saved sums are over every rank: rank 0 carries them on, the others restart at 0
        sums = {k: (v if rank == 0 else 0.0) for k, v in saved["sums"].items()}
        best_score, best_state = saved["best_score"], saved["best_state"]
        ctx.history[:] = json.loads(saved["history"])

    def snapshot(epoch: int, batch: int) -> dict[str, Any]:
        # every rank reaches each save point at the same step, so the loss sums can be added up here;
        # history travels as JSON (a plugin's metrics may be numpy scalars, which weights-only loading refuses)
        return {"stage": ctx.stage, "epoch": epoch, "batch": batch, "step": step, "world_size": world,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "criterion": criterion.state_dict(), "rng": rng_state(), "sums": ddp.sum_across(dict(sums)),
                "best_score": None if best_score is None else float(best_score), "best_state": best_state,
                "history": json.dumps(ctx.history, default=float)}

    every = ctx.checkpoint.every if ctx.checkpoint is not None else 0
    stop = _StopRequest(enabled=ctx.checkpoint is not None)
    progress = ctx.progress(ctx.stage, total=steps) if ctx.progress else None
    if progress and step:
        progress.advance(step)
    try:
        for epoch in range(start_epoch, ctx.epochs):
            ctx.train.set_epoch(epoch)
            first = start_batch if epoch == start_epoch else 0
            if first == 0:
                sums = {}
            loader = DataLoader(ctx.train, batch_size=per_rank, sampler=EpochOrder(len(ctx.train), ctx.seed, epoch,
                                                                                   rank, world, first * per_rank),
                                num_workers=ctx.num_workers, drop_last=drop_last, pin_memory=device.type == "cuda",
                                worker_init_fn=_quiet_worker if ctx.num_workers else None,
                                # the loader's own seed from its own generator: the global RNG stream stays
                                # the same whether an epoch starts at its beginning or is resumed part-way
                                generator=torch.Generator().manual_seed(ctx.seed * 1000 + epoch))
            model.train()
            for b, batch in enumerate(loader, start=first):
                x = batch[ctx.view].to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
                y = batch["target"].to(device, non_blocking=True)
                try:
                    with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                        out = net(x)
                        t_out: ModelOutput | None = None
                        if table is not None:
                            t_out = table.lookup(batch["index"], batch["flipped"])
                        elif uses_teacher:
                            with torch.no_grad():
                                t_out = teacher(batch["clean"].to(device, non_blocking=True))
                        terms = criterion(out, y, t_out)
                    loss = terms["loss"]
                    if not torch.isfinite(loss):
                        raise TrainingDiverged(
                            f"stage '{ctx.stage}': the loss became {loss.item()} at epoch {epoch + 1}, step "
                            f"{step + 1}; " + (ctx.checkpoint.describe() + "; " if ctx.checkpoint else "")
                            + "try a lower learning rate")
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    if world > 1:
                        ddp.average_gradients(criterion.parameters())
                    scaler.step(optimizer)
                    scaler.update()
                except torch.cuda.OutOfMemoryError as exc:
                    raise RunFailed(f"stage '{ctx.stage}': out of GPU memory at batch size {ctx.batch_size}; try "
                                    f"--batch-size {max(1, ctx.batch_size // 2)}") from exc
                scheduler.step()
                step += 1
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
                if progress:
                    progress.advance(1)
                requested = stop.agreed()
                if requested or (every and step % every == 0 and b + 1 < per_epoch):
                    if ctx.checkpoint is not None:
                        ctx.checkpoint.save(snapshot(epoch, b + 1))
                    if requested:
                        raise Interrupted(f"interrupted in stage '{ctx.stage}' at epoch {epoch + 1}, step {step}; "
                                          + ctx.checkpoint.describe())
            val = evaluate(model, ctx.val, ctx.task, device)
            score = val[ctx.task.metric]
            means = ddp.sum_across({k: v / max(per_epoch, 1) for k, v in sums.items()})
            record = {"epoch": epoch + 1, **{f"train_{k}": v / world for k, v in means.items()},
                      **{f"val_{k}": v for k, v in val.items()}, "lr": scheduler.get_last_lr()[0]}
            ctx.history.append(record)
            if better_score(ctx.task, score, best_score):
                best_score = score
                best_state = copy.deepcopy(model.state_dict())
            if ctx.checkpoint is not None:
                ctx.checkpoint.save(snapshot(epoch + 1, 0))
            if progress:
                best = "none yet" if best_score is None else f"{best_score:.1f}"
                progress.note(f"ep {epoch + 1}/{ctx.epochs} val {ctx.task.metric} {score:.1f} (best {best})")
        # a Ctrl-C during the last evaluation: the epoch's checkpoint is saved already
        if stop.agreed() and ctx.checkpoint is not None:
            raise Interrupted(f"interrupted in stage '{ctx.stage}' after its last epoch; " + ctx.checkpoint.describe())
    finally:
        stop.restore()
        if progress:
            progress.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    if best_score is None or not math.isfinite(best_score):
        raise TrainingDiverged(f"stage '{ctx.stage}': no finite validation score")
    return model
