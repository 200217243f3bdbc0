"""Mixing the pair: mixup or CutMix applied identically to a batch's clean and occluded views.

Beyer et al. ("Knowledge distillation: a good teacher is patient and consistent", CVPR 2022) show the
teacher and the student must see *the same* input, and that mixing images widens what the teacher's
function is matched on. Here the student's occluded batch and the teacher's clean batch are mixed with
one coefficient, one partner per face and (CutMix) one box, so the teacher still sees the clean version
of exactly what the student sees; the targets are mixed with the same coefficient.

- ``mixup`` (Zhang et al., ICLR 2018): ``x = λ·x + (1-λ)·x[partner]``, λ ~ Beta(α, α).
- ``cutmix`` (Yun et al., ICCV 2019): a box of area ``(1-λ)·H·W`` (centre uniform, clipped at the border)
  is pasted from the partner; λ becomes the share of the face left uncovered.

One λ per batch, and the partner of face ``i`` is face ``i-1`` (the batch order is already random), as in
torchvision's ``MixUp`` / ``CutMix`` (timm's ``Mixup`` pairs the batch with its reverse instead). Those classes are not used because they
mix one image tensor with integer class labels; here two views share one draw, and targets may be class
distributions (FER+ soft labels) or ages, which mix linearly as well. The draw comes from (seed, epoch,
batch) alone, so a stage resumed part-way mixes its remaining batches exactly as it would have.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..config import MIX_DEFAULTS

__all__ = ["PairMix"]


class PairMix:
    """Mix a batch's views and targets with one draw.

    ``mode``: "mixup" or "cutmix"; ``alpha`` > 0: the Beta(α, α) the coefficient λ is drawn from (defaults
    in ``config.MIX_DEFAULTS``: 0.4 for mixup, Zhang et al.'s ImageNet range; 1.0 for CutMix, Yun et al.'s);
    ``num_classes``: K for class targets (int64 ids become one-hot before mixing), None for a regression
    task (float targets, mixed as they are). ``seed``: the stage's seed.
    """

    def __init__(self, mode: str, alpha: float | None = None, num_classes: int | None = None, seed: int = 0):
        if mode not in MIX_DEFAULTS:
            raise ValueError(f"mix mode must be one of {', '.join(MIX_DEFAULTS)}, not {mode!r}")
        self.mode = mode
        self.alpha = float(MIX_DEFAULTS[mode] if alpha is None else alpha)
        if not self.alpha > 0:
            raise ValueError(f"mix alpha must be > 0, not {self.alpha}")
        self.num_classes, self.seed = num_classes, seed

    def draw(self, epoch: int, batch: int, height: int, width: int) -> tuple[float, tuple[int, int, int, int] | None]:
        """λ and, for CutMix, the box (top, bottom, left, right) in pixels, for batch ``batch`` of ``epoch``
        (both 0-based); the same for every call with the same arguments."""
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, epoch, batch, 29]))
        lam = float(rng.beta(self.alpha, self.alpha))
        if self.mode == "mixup":
            return lam, None
        cut = np.sqrt(1.0 - lam)
        ch, cw = int(round(height * cut)), int(round(width * cut))
        cy, cx = int(rng.integers(height)), int(rng.integers(width))
        top, bottom = max(cy - ch // 2, 0), min(cy + ch - ch // 2, height)
        left, right = max(cx - cw // 2, 0), min(cx + cw - cw // 2, width)
        return 1.0 - (bottom - top) * (right - left) / (height * width), (top, bottom, left, right)

    def __call__(self, batch: dict[str, torch.Tensor], views: tuple[str, ...], epoch: int,
                 index: int) -> dict[str, torch.Tensor]:
        """A copy of ``batch`` whose ``views`` ((B, C, H, W) each) and ``"target"`` are mixed with the draw
        of batch ``index`` of ``epoch``. Class targets come back as (B, K) float distributions. A batch of
        one face is returned as it is (it has no partner)."""
        first = batch[views[0]]
        if len(first) < 2:
            return batch
        lam, box = self.draw(epoch, index, first.shape[-2], first.shape[-1])
        out: dict[str, Any] = dict(batch)
        for name in views:
            x = batch[name]
            if box is None:
                out[name] = x * lam + x.roll(1, 0) * (1.0 - lam)
            else:
                top, bottom, left, right = box
                x = x.clone()
                x[..., top:bottom, left:right] = batch[name].roll(1, 0)[..., top:bottom, left:right]
                out[name] = x
        y = batch["target"]
        if self.num_classes is not None and y.ndim == 1:
            y = F.one_hot(y.long(), self.num_classes)
        y = y.float()
        out["target"] = y * lam + y.roll(1, 0) * (1.0 - lam)
        return out
