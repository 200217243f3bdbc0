"""The cache keys: everything that makes a stage's weights, as a JSON-able dict.

A trained teacher, baseline or student is stored in the run cache under the digest of its key
(``io.key_digest``) with the key itself beside it, and reused only when a later run computes the same
key. The contents of these dicts are therefore a file format: a key that changes without a change in
what it describes makes every cached model, and every run directory waiting for ``--resume``, unusable
(``tests/test_normalisation_and_keys.py`` holds them fixed). Change a key only together with what it
describes.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
import torch.nn as nn

from .._version import __version__
from ..config import RunConfig
from ..distillers.base import key_settings
from ..engine import distributed as ddp
from ..engine.trainer import TRAINER_VERSION, resolve_amp, resolve_device
from ..io import file_digest
from .parts import Parts

_PRECISION = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def resolved_settings(cfg: RunConfig, parts: Parts) -> dict[str, Any]:
    """Every plugin's effective settings, defaults included, and what the run's ``auto`` settings resolve
    to here (device, training precision, processes): for config.json and the cache keys."""
    device = resolve_device(cfg.device)
    return {
        "occlusion": parts.occlusion.settings(),
        "task": parts.task.settings(),
        "distiller": {**cfg.distiller_args, **key_settings(parts.distiller)},
        # a cache folder given as an option moves files, not results
        "dataset": {"args": {k: v for k, v in cfg.dataset_args.items() if k != "cache_dir"},
                    "fingerprint": parts.dataset.fingerprint()},
        "channels": cfg.channels or parts.dataset.native_channels,
        "device": str(device),
        "precision": _PRECISION[resolve_amp(cfg.amp, device)],
        "processes": ddp.world_size(),
        "origins": parts.origins,
    }


def teacher_key(cfg: RunConfig, settings: dict[str, Any]) -> dict[str, Any]:
    """Everything that makes the teacher's weights. Besides data, model and optimisation, the numerics:
    training precision, ``--compile`` (fused kernels round differently), the device type (its kernels,
    and what ``auto`` precision means there) and the number of processes (BatchNorm statistics are per
    process). Students embed this key, and the cached teacher outputs are stored under it.
    ``settings``: ``resolved_settings(cfg, parts)``."""
    import timm

    key = {
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
    # only when given, so that keys written before these options existed still match
    if cfg.backbone_args:
        key["backbone_args"] = cfg.backbone_args
    if cfg.augment:
        key["augment"] = cfg.augment
    return key


def student_key(cfg: RunConfig, settings: dict[str, Any], teacher_key: dict[str, Any], distiller_name: str,
                distiller_settings: dict[str, Any], distiller_origin: str, uses_teacher: bool = True) -> dict[str, Any]:
    """Everything that makes a student's weights (the baseline's too: distiller ``finetune``, no teacher):
    its teacher's key, the occlusion, the distiller with its settings and origin, the students'
    schedule and the evaluation faces' seed (validation picks the best epoch)."""
    key = {
        "what": "student", "teacher": teacher_key, "occlusion": cfg.occlusion,
        "occlusion_settings": settings["occlusion"], "occlusion_origin": settings["origins"]["occlusion"],
        "distiller": distiller_name, "distiller_settings": distiller_settings,
        "distiller_origin": distiller_origin, "epochs": cfg.student_epochs, "lr": cfg.student_lr,
        "eval_seed": cfg.eval_seed,
        # a distiller learns from teacher outputs computed once in fp32 (cached) or at each step under the
        # training precision (online); the baseline never runs the teacher
        "teacher_outputs": cfg.teacher_outputs if uses_teacher else None,
    }
    if cfg.augment:  # the teacher's key holds it too; here as well, so that a student's key says how it trained
        key["augment"] = cfg.augment
    if cfg.mix:  # students only: the teacher trains on its clean faces unmixed
        key["mix"] = cfg.mix
    return key


def teacher_outputs_key(teacher_key: dict[str, Any], teacher: nn.Module) -> dict[str, Any]:
    """The key of a teacher's outputs on every clean training face and flip. The teacher's key fixes the
    data, image size and channels; the digest of its weights makes sure the outputs come from exactly
    this teacher, even one trained again."""
    digest = hashlib.sha256()
    for name, tensor in sorted(teacher.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return {"what": "teacher-outputs", "teacher": teacher_key, "weights": digest.hexdigest()}
