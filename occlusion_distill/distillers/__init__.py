"""Distiller plugins: finetune (baseline) and kd; triplet and combined plug into the same interface."""

from .base import Distiller
from .builtin import Finetune, SoftTargetKD, kd_kl

__all__ = ["Distiller", "Finetune", "SoftTargetKD", "kd_kl"]
