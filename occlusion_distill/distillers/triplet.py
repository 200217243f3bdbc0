"""``triplet``: distillation through embeddings (Georgescu & Ionescu, ICPR 2020).

``L = task_loss(y, s) + λ · mean max(0, ‖E_s(a′) − E_t(p)‖ − ‖E_s(a′) − E_s(n′)‖ + α)``

The anchor a′ is an occluded face through the student. The positive p is the clean face through the
frozen teacher: the same face by default, or (``positive=class``) another face of the same class in
the batch. The negative n′ is an occluded face through the student, mined (``mining.py``) from a memory
bank of recent student embeddings, detached (``negatives=bank``, the default), or from the other faces
of the batch itself, whose gradient then flows through the negative too (``negatives=batch``; under
torchrun, each process's share of the batch). The mean runs over anchors that have a valid negative; the
paper's Σ differs from it only by the batch size, which λ absorbs. When the student's embedding size
differs from the teacher's, a linear projection (trained with the student) maps it across. Embeddings
are L2-normalised by default, so α is in units of the unit sphere. The embedding is the backbone's
pooled output (``layer=embedding``, the default) or, with ``layer=NAME``, the globally average-pooled
feature map of backbone module NAME in both networks (``distillers.feature_maps`` lists a backbone's
layers); the teacher then runs on each batch, since its map is needed at every step.

``kd=w`` (default 0) also trains the same student with ``kd``'s soft targets, one student with both
losses at once: ``(1-w)·task + w·τ²·KL(t ‖ s) + λ·triplet`` (for age, ``w·|s − t|`` as ``kd`` does).
"""

from __future__ import annotations

import json
import math
import numbers
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..engine import distributed as ddp
from ..errors import RunFailed, UsageError
from ..models.network import ModelOutput
from ..registry import registry
from ..tasks.base import Task
from .base import Distiller, feature_maps
from .kd import soft_target_term
from .mining import INDEX_KINDS, BankIndex, MemoryBank

if TYPE_CHECKING:
    from ..engine.stage import StageContext


def triplet_loss(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float,
                 valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over valid anchors of max(0, ‖a − p‖ − ‖a − n‖ + margin); zero when none is valid."""
    d_ap = (anchor - positive).norm(dim=1)
    d_an = (anchor - negative).norm(dim=1)
    losses = F.relu(d_ap - d_an + margin)
    if valid is None:
        return losses.mean()
    valid = valid.to(losses.dtype)
    return (losses * valid).sum() / valid.sum().clamp_min(1.0)


class TripletKD(Distiller):
    """Triplet KD: task loss + λ·triplet(student occluded anchor, teacher clean positive, mined negative)."""

    def __init__(self, task: Task, lambda_: float = 0.1, margin: float = 0.2, normalize: bool = True,
                 miner: str = "hard", bank_size: int = 4096, index: str = "auto", age_gap: float = 10.0,
                 positive: str = "same", kd: float = 0.0, tau: float = 4.0, negatives: str = "bank",
                 layer: str = "embedding"):
        super().__init__(task)
        if not _finite(kd) or not 0.0 <= kd <= 1.0:
            raise UsageError(f"triplet: kd must be in [0, 1] (the weight of kd's loss), not {kd!r}")
        if not _finite(tau) or tau <= 0:
            raise UsageError(f"triplet: tau must be a positive number, not {tau!r}")
        self.kd, self.tau = float(kd), float(tau)
        # a NaN would pass a plain ``< 0`` test and make every loss NaN; a string would fail deep in the loss
        for name, value in (("lambda", lambda_), ("margin", margin)):
            if not _finite(value) or value < 0:
                raise UsageError(f"triplet: {name} must be a number >= 0, not {value!r}")
        if not _finite(age_gap) or age_gap <= 0:
            raise UsageError(f"triplet: age_gap must be a positive number (years), not {age_gap!r}")
        if not isinstance(normalize, bool):  # bool("false") is True: a string must not pass as a switch
            raise UsageError(f"triplet: normalize must be true or false, not {normalize!r}")
        if positive not in ("same", "class"):
            raise UsageError(f"triplet: positive must be 'same' (the same face) or 'class', not {positive!r}")
        if negatives not in ("bank", "batch"):
            raise UsageError(f"triplet: negatives must be 'bank' (the memory bank) or 'batch', not {negatives!r}")
        if not isinstance(layer, str) or not layer:
            raise UsageError(f"triplet: layer must be 'embedding' or a module name of the backbone, not {layer!r}")
        if positive == "class" and task.regression:
            raise UsageError("triplet: positive=class needs classes; for age use positive=same")
        if not isinstance(bank_size, int) or isinstance(bank_size, bool) or bank_size < 1:
            raise UsageError(f"triplet: bank_size must be a positive integer, not {bank_size!r}")
        if index not in INDEX_KINDS:
            raise UsageError(f"triplet: index must be {', '.join(INDEX_KINDS[:-1])} or {INDEX_KINDS[-1]}, "
                             f"not {index!r}")
        self.lambda_, self.margin, self.normalize = float(lambda_), float(margin), bool(normalize)
        self.miner_name, self.bank_size, self.index_kind = miner, bank_size, index
        self.age_gap, self.positive, self.negatives, self.layer = float(age_gap), positive, negatives, layer
        self.miner = registry("miners").build(miner, regression=task.regression, age_gap=age_gap)[0]
        self.projection: nn.Module | None = None
        self.bank: MemoryBank | None = None
        self.index: BankIndex | None = None
        self._use_gpu = False
        self._seed = 0

    def hparams(self) -> dict[str, Any]:
        out = {"lambda": self.lambda_, "margin": self.margin, "normalize": self.normalize, "miner": self.miner_name,
               "bank_size": self.bank_size, "index": self.index_kind, "age_gap": self.age_gap,
               "positive": self.positive}
        if self.kd:  # only when used: the keys of plain triplet students stay as they were
            out.update(kd=self.kd, tau=self.tau)
        if self.negatives != "bank":
            out["negatives"] = self.negatives
        if self.layer != "embedding":
            out["layer"] = self.layer
        return out

    def prepare(self, student_dim: int, teacher_dim: int, cuda: bool = False, seed: int = 0) -> None:
        """Before training: the projection when sizes differ, an empty bank, and the miner's and the
        index's random streams started at ``seed`` (the run's seed; >= 0)."""
        self.projection = nn.Linear(student_dim, teacher_dim) if student_dim != teacher_dim else None
        self.bank, self.index, self._use_gpu, self._seed = None, None, cuda, seed
        self.miner.reseed(seed)

    def get_extra_state(self) -> dict[str, Any]:
        """The miner's RNG and the memory bank: part of a stage checkpoint, so a resumed stage mines the
        same negatives (the flat index is rebuilt from the bank; an IVF index is retrained on it)."""
        state: dict[str, Any] = {"miner_rng": json.dumps(self.miner.rng.bit_generator.state)}
        if self.bank is not None:
            state.update(embeddings=torch.from_numpy(self.bank.embeddings.copy()),
                         labels=torch.from_numpy(self.bank.labels.copy()), size=self.bank.size,
                         cursor=self.bank.cursor)
        return state

    def set_extra_state(self, state: dict[str, Any]) -> None:
        if "miner_rng" in state:  # checkpoints from before the bank existed hold nothing
            self.miner.rng.bit_generator.state = json.loads(state["miner_rng"])
        if "embeddings" not in state:
            return
        self.bank = MemoryBank(self.bank_size, int(state["embeddings"].shape[1]))
        self.bank.embeddings[:] = state["embeddings"].numpy()
        self.bank.labels[:] = state["labels"].numpy()
        self.bank.size, self.bank.cursor = int(state["size"]), int(state["cursor"])
        self.index = BankIndex(self.bank, self.index_kind, use_gpu=self._use_gpu, seed=self._seed)
        self.index.update(np.arange(self.bank.size))

    def train_student(self, ctx: "StageContext") -> nn.Module:
        s_dim = ctx.model.embed_dim
        t_dim = ctx.teacher.embed_dim if ctx.teacher is not None else s_dim
        self.prepare(s_dim, t_dim, cuda=ctx.device.type == "cuda", seed=ctx.seed)
        return super().train_student(ctx)

    def setup(self, student: nn.Module, teacher: nn.Module | None, example: torch.Tensor) -> None:
        """With ``layer=NAME``: declare the layer (the trainer hooks it in both networks) and size the
        projection by its channels; ``UsageError`` for a layer without a 4-D output in both backbones."""
        if self.layer == "embedding":
            self.feature_layers = ()
            return
        maps = {role: dict(feature_maps(getattr(net, "backbone", net), example))
                for role, net in (("student", student), ("teacher", teacher if teacher is not None else student))}
        for role, found in maps.items():
            if self.layer not in found:
                raise UsageError(f"triplet: the {role} backbone has no layer '{self.layer}' with a 4-D output; "
                                 f"layers: {', '.join(list(found)[-12:])}")
        self.feature_layers = (self.layer,)
        s_dim, t_dim = maps["student"][self.layer][1], maps["teacher"][self.layer][1]
        self.projection = nn.Linear(s_dim, t_dim) if s_dim != t_dim else None

    def _embeddings(self, student: ModelOutput, teacher: ModelOutput) -> tuple[torch.Tensor, torch.Tensor]:
        """(student, teacher) embeddings: the pooled outputs, or the pooled maps of ``layer``."""
        if self.layer == "embedding":
            return student.embedding, teacher.embedding
        s, t = (student.features or {}).get(self.layer), (teacher.features or {}).get(self.layer)
        if s is None or t is None:
            raise RunFailed(f"triplet: no feature map of layer '{self.layer}' reached the loss; train it through "
                            f"the stage (ctx.fit), which calls setup() and passes the maps of feature_layers")
        return s.mean(dim=(2, 3)), t.mean(dim=(2, 3))

    def embed(self, student_embedding: torch.Tensor) -> torch.Tensor:
        e = self.projection(student_embedding) if self.projection is not None else student_embedding
        return F.normalize(e, dim=1) if self.normalize else e

    def _labels(self, targets: torch.Tensor) -> np.ndarray:
        t = targets.detach()
        if t.ndim == 2:  # soft targets: mine by the most likely class
            t = t.argmax(dim=1)
        return t.float().cpu().numpy()

    def compute_loss(self, student: ModelOutput, targets: torch.Tensor,
                     teacher: ModelOutput | None) -> dict[str, torch.Tensor]:
        task_loss = self.task.loss(student.logits, targets)
        s_emb, t_emb = self._embeddings(student, teacher)
        anchor = self.embed(s_emb)
        positive = t_emb.detach()
        if self.normalize:
            positive = F.normalize(positive, dim=1)
        labels = self._labels(targets)
        if self.positive == "class":
            positive = positive[torch.as_tensor(_same_class_partner(labels), device=positive.device)]
        a_np = anchor.detach().float().cpu().numpy()
        d_ap = (anchor.detach() - positive).norm(dim=1).float().cpu().numpy()
        if self.negatives == "batch":  # the batch is the bank: a face is never its own negative (same label)
            batch = MemoryBank(len(a_np), a_np.shape[1])
            batch.add(a_np, labels)
            slots = self.miner.mine(a_np, labels, d_ap, batch, None)
            found = slots >= 0
            negative = anchor[torch.as_tensor(np.where(found, slots, 0), device=anchor.device)]
        else:
            if self.bank is None:
                self.bank = MemoryBank(self.bank_size, anchor.shape[1])
                self.index = BankIndex(self.bank, self.index_kind, use_gpu=self._use_gpu, seed=self._seed)
            slots = self.miner.mine(a_np, labels, d_ap, self.bank, self.index)
            found = slots >= 0
            negative = torch.from_numpy(self.bank.embeddings[np.where(found, slots, 0)]).to(anchor.device,
                                                                                           anchor.dtype)
        valid = torch.from_numpy(found).to(anchor.device)
        trip = triplet_loss(anchor, positive, negative, self.margin, valid)
        if self.negatives == "bank":
            # under torchrun every rank's anchors enter every rank's bank: negatives come from the whole batch
            self.index.update(self.bank.add(ddp.all_gather_rows(a_np), ddp.all_gather_rows(labels)))
        terms = {"task": task_loss, "triplet": trip, "mined": torch.tensor(float(found.mean()))}
        if self.kd:
            distill = soft_target_term(self.task, student, teacher, self.tau)
            terms["distill"] = distill
            return {"loss": (1.0 - self.kd) * task_loss + self.kd * distill + self.lambda_ * trip, **terms}
        return {"loss": task_loss + self.lambda_ * trip, **terms}


def _finite(value: Any) -> bool:
    """A real number (numpy's too), not a bool, and neither NaN nor infinite."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _same_class_partner(labels: np.ndarray) -> np.ndarray:
    """For each face, another face of its class in the batch (itself when it is alone)."""
    partner = np.arange(len(labels))
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) > 1:
            partner[idx] = np.roll(idx, 1)
    return partner
