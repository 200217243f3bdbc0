"""Distiller plugins: finetune (the baseline), kd, triplet (with its miners and memory bank) and combined."""

from .base import TASK_KINDS, Distiller, feature_maps, task_kind
from .finetune import Finetune
from .kd import SoftTargetKD, kd_kl
from .mining import BankIndex, MemoryBank, Miner
from .triplet import TripletKD, triplet_loss
from .combined import Combined, CombinedModel

__all__ = ["Distiller", "TASK_KINDS", "feature_maps", "task_kind", "Finetune", "SoftTargetKD", "kd_kl", "MemoryBank",
           "BankIndex", "Miner", "TripletKD", "triplet_loss", "Combined", "CombinedModel"]
