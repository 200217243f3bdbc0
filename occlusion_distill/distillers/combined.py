"""``combined``: the paper's best student, a head on the joined embeddings of the kd and triplet students.

The member students (``kd`` and ``triplet`` by default) come from the run cache when a run with the
same teacher, data, occlusion and settings trained them, and are trained otherwise. They are frozen.
Their embeddings of the occluded training faces are joined and standardised, and a head is fitted on top:
multinomial logistic regression for classes, ridge regression for age. Its L2 strength is chosen
on the occluded validation faces from a small grid. The result is evaluated like every other student.

``combine=average`` replaces the head by the mean of the members' class probabilities (the mean of their
predictions for regression): nothing is fitted. The paper's head stays the default.

A member ``NAME:K`` is replica K of that student (its own training draws, the same teacher). With
``members=finetune,finetune:1`` the same head joins two plain fine-tuned students: the **ensemble
control**, which tells how much of ``combined``'s gain two models of any kind would give.

Members are built with their distillers' default options unless ``member_args`` gives them others, one
mapping per member as spelt in ``members`` (a replica ``kd:1`` needs its own entry):
``{"kd": {"lambda": 1.0, "tau": 2}}``. A member given the options of a run of that distiller alone, written
the same way (``1`` is not ``1.0`` in a key), is that run's student, read from the run cache.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ..config import option_name
from ..engine.stage import TrainingDiverged, better_score
from ..errors import OccdistillError, PluginError, RunFailed, UsageError
from ..models.network import ModelOutput
from ..registry import registry
from ..tasks.base import Task
from .base import Distiller, split_replica

if TYPE_CHECKING:
    from ..engine.stage import StageContext

L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)


class CombinedModel(nn.Module):
    """Frozen member students whose joined, standardised embeddings feed one linear head; or, with
    ``average`` ("probabilities" or "outputs"), whose softmax probabilities (returned as their log, so
    that argmax and cross-entropy read them as logits) or raw outputs are averaged instead."""

    def __init__(self, members: Sequence[nn.Module], output_dim: int, average: str | None = None):
        super().__init__()
        self.average = average
        self.members = nn.ModuleList(members)
        self.embed_dim = sum(int(m.embed_dim) for m in members)
        self.head = nn.Linear(self.embed_dim, output_dim)
        self.register_buffer("mean", torch.zeros(self.embed_dim))
        self.register_buffer("std", torch.ones(self.embed_dim))
        for p in self.members.parameters():
            p.requires_grad_(False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([m(x).embedding for m in self.members], dim=1)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        if self.average is None:
            joined = self.features(x)
            return ModelOutput(self.head((joined - self.mean) / self.std), joined)
        outs = [m(x) for m in self.members]
        joined = torch.cat([o.embedding for o in outs], dim=1)
        if self.average == "outputs":
            return ModelOutput(torch.stack([o.logits for o in outs]).mean(0), joined)
        probs = torch.stack([F.softmax(o.logits.float(), dim=1) for o in outs]).mean(0)
        return ModelOutput(probs.clamp_min(1e-12).log(), joined)

    def train(self, mode: bool = True) -> "CombinedModel":
        super().train(mode)
        self.members.eval()  # frozen: batch-norm statistics stay those of the members
        return self


class Combined(Distiller):
    """Head on the joined embeddings of frozen member students (logistic / ridge; by default kd and
    triplet), or with ``combine=average`` the mean of their outputs; see the module docstring."""

    COMBINE = ("head", "average")

    def __init__(self, task: Task, members: Sequence[str] | str = ("kd", "triplet"), combine: str = "head",
                 member_args: Mapping[str, Mapping[str, Any]] | None = None):
        super().__init__(task)
        if combine not in self.COMBINE:
            raise UsageError(f"combined: combine must be {' or '.join(self.COMBINE)}, not {combine!r}")
        self.combine = combine
        if isinstance(members, str):
            members = [m.strip() for m in members.split(",")]
        try:  # "kd:01" is "kd:1": one spelling per student, in keys and duplicate checks
            parsed = [split_replica(str(m).strip()) for m in members]
        except UsageError as exc:
            raise UsageError(f"combined: members: {exc}") from None
        members = [f"{name}:{k}" if k else name for name, k in parsed]
        names = [name for name, _ in parsed]
        if len(members) < 1 or "combined" in names or len(set(members)) < len(members):
            raise UsageError(f"combined: members must be other distillers, each once (a second of the same as "
                             f"NAME:1), e.g. kd,triplet or finetune,finetune:1, not {members!r}")
        self.members = members
        self.member_args = _member_args(member_args, members)
        for name, options in self.member_args.items():  # a wrong option fails now, not after the teacher
            try:
                registry("distillers").build(split_replica(name)[0], task=task, **options)
            except OccdistillError as exc:  # the same kind of error, saying where the option came from
                raise type(exc)(f"combined: member_args: {exc}") from None

    def setup(self, student: nn.Module, teacher: nn.Module | None, example: torch.Tensor) -> None:
        """Each member's own ``setup`` on copies of the networks. ``combined`` trains no network itself, so
        this runs only in preflight: a member's option that the backbone cannot honour (a triplet member's
        ``layer``) then fails before the teacher trains, as it would in that member's own run. Raises the
        member's error, prefixed "combined: member NAME:"."""
        for name in self.members:
            member, _ = registry("distillers").build(split_replica(name)[0], task=self.task,
                                                     **self.member_args.get(name, {}))
            member_teacher = (teacher if teacher is not None else student) if member.uses_teacher else None
            try:
                member.setup(copy.deepcopy(student), copy.deepcopy(member_teacher), example)
            except OccdistillError as exc:
                raise type(exc)(f"combined: member {name}: {exc}") from None

    def hparams(self) -> dict[str, Any]:
        # new options join the key only when set, so that students cached before them keep their keys
        extra = {"member_args": self.member_args} if self.member_args else {}
        if self.combine == "average":
            return {"members": self.members, "combine": "average", **extra}
        return {"members": self.members, "l2_grid": list(L2_GRID), **extra}  # the head: as keyed before `combine`

    @property
    def _average(self) -> str | None:
        return None if self.combine == "head" else "outputs" if self.task.regression else "probabilities"

    def student_template(self, teacher: nn.Module) -> nn.Module:
        return CombinedModel([copy.deepcopy(teacher) for _ in self.members], self.task.output_dim, self._average)

    def compute_loss(self, student: ModelOutput, targets: torch.Tensor,
                     teacher: ModelOutput | None) -> dict[str, torch.Tensor]:
        raise PluginError("combined fits its head in train_student; it has no per-step loss")

    def train_student(self, ctx: "StageContext") -> nn.Module:
        if ctx.student_for is None:
            raise RunFailed("combined needs the run to provide its member students (StageContext.student_for)")
        members = [ctx.student_for(name, self.member_args.get(name, {})) if name in self.member_args
                   else ctx.student_for(name) for name in self.members]
        model = CombinedModel([copy.deepcopy(m) for m in members], self.task.output_dim,
                              self._average).to(ctx.device)
        model.eval()
        if self._average is not None:  # nothing to fit: its validation score, for the record
            val_out = _batched(lambda x: model(x).logits, ctx.val.images, ctx.device).numpy()
            score = self.task.metrics(val_out, ctx.val.targets)[self.task.metric]
            ctx.history.append({"epoch": 1, f"val_{self.task.metric}": score})
            return model
        x_train, y_train = _train_features(model, ctx)
        x_val = _features(model, ctx.val.images, ctx.device)
        mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-6)
        model.mean.copy_(mean)
        model.std.copy_(std)
        z_train, z_val = (x_train - mean) / std, (x_val - mean) / std
        best = None
        for step, l2 in enumerate(L2_GRID):
            w, b = self._fit_head(z_train, y_train, l2)
            val_out = (z_val @ w.T + b).numpy()
            score = self.task.metrics(val_out, ctx.val.targets)[self.task.metric]
            ctx.history.append({"epoch": step + 1, "l2": l2, f"val_{self.task.metric}": score})
            if better_score(self.task, score, None if best is None else best[0]):
                best = (score, w, b)
        if best is None:
            raise TrainingDiverged(f"stage '{ctx.stage}': no finite validation score for any L2 strength "
                                   f"({', '.join(map(str, L2_GRID))})")
        with torch.no_grad():
            model.head.weight.copy_(best[1])
            model.head.bias.copy_(best[2])
        return model

    def _fit_head(self, z: torch.Tensor, y: torch.Tensor, l2: float) -> tuple[torch.Tensor, torch.Tensor]:
        if self.task.regression:  # ridge, closed form, on the task's standardised targets
            t = self.task.normalise(y).reshape(-1, 1).double()
            zc = torch.cat([z.double(), torch.ones(len(z), 1, dtype=torch.float64)], dim=1)
            reg = l2 * len(z) * torch.eye(zc.shape[1], dtype=torch.float64)
            reg[-1, -1] = 0.0  # no penalty on the intercept
            sol = torch.linalg.solve(zc.T @ zc + reg, zc.T @ t)
            return sol[:-1].T.float(), sol[-1].float()
        # multinomial logistic regression, full batch, L-BFGS (convex: the optimum, not a schedule)
        head = nn.Linear(z.shape[1], self.task.output_dim)
        opt = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=200, line_search_fn="strong_wolfe")
        targets = y.float() if y.ndim == 2 else y.long()

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = F.cross_entropy(head(z), targets) + l2 * head.weight.pow(2).sum() / 2
            loss.backward()
            return loss

        opt.step(closure)
        return head.weight.detach(), head.bias.detach()


def _member_args(raw: Mapping[str, Mapping[str, Any]] | None, members: list[str]) -> dict[str, dict[str, Any]]:
    """``member_args`` checked against the members and spelt as the members are (``kd:01`` is ``kd:1``;
    ``lambda`` is ``lambda_``)."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping) or not all(isinstance(v, Mapping) for v in raw.values()):
        raise UsageError(f"combined: member_args maps a member to its options, e.g. "
                         f"{{\"kd\": {{\"lambda\": 1.0}}}}, not {raw!r}")
    out: dict[str, dict[str, Any]] = {}
    for name, options in raw.items():
        try:
            base, k = split_replica(str(name).strip())
        except UsageError as exc:
            raise UsageError(f"combined: member_args: {exc}") from None
        member = f"{base}:{k}" if k else base
        if member not in members:
            raise UsageError(f"combined: member_args names '{name}', which is not a member "
                             f"(members: {','.join(members)})")
        spelt: dict[str, Any] = {}
        for key, value in options.items():
            if value is None:  # as the registry drops it: the default
                continue
            kwarg = option_name(str(key))
            if kwarg in spelt:
                raise UsageError(f"combined: member_args: '{name}' gives option '{key}' twice")
            spelt[kwarg] = value
        if spelt:
            out[member] = spelt
    return dict(sorted(out.items()))


@torch.no_grad()
def _batched(fn: Any, images: torch.Tensor, device: torch.device, batch: int = 256) -> torch.Tensor:
    """``fn`` over ``images`` in batches on ``device``, gathered as float32 on the CPU."""
    out = []
    for i in range(0, len(images), batch):
        out.append(fn(images[i:i + batch].to(device).contiguous(memory_format=torch.channels_last)).float().cpu())
    return torch.cat(out)


def _features(model: CombinedModel, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    return _batched(model.features, images, device)


@torch.no_grad()
def _train_features(model: CombinedModel, ctx: "StageContext") -> tuple[torch.Tensor, torch.Tensor]:
    """The members' embeddings of the occluded training faces (one fixed occlusion and flip per face; not
    augmented, so that the head sees faces as validation and test faces are)."""
    train = ctx.train
    train.set_epoch(0)
    need, augment = (train.need_clean, train.need_occluded), getattr(train, "augment", None)
    train.need_clean, train.need_occluded = False, True
    if augment is not None:
        train.augment = None
    try:
        feats, targets = [], []
        for batch in DataLoader(train, batch_size=256, shuffle=False, num_workers=ctx.num_workers):
            x = batch["occluded"].to(ctx.device).contiguous(memory_format=torch.channels_last)
            feats.append(model.features(x).float().cpu())
            targets.append(batch["target"])
    finally:
        train.need_clean, train.need_occluded = need
        if augment is not None:
            train.augment = augment
    return torch.cat(feats), torch.cat(targets)
