"""``FaceModel``: backbone + task head, and loading of user weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple, Sequence

import torch
import torch.nn as nn

from ..errors import UsageError
from ..registry import registry
from .backbones import DEFAULT_MEAN, DEFAULT_STD, input_normalisation


class ModelOutput(NamedTuple):
    logits: torch.Tensor  # (B, output_dim): class logits, or the standardised regression value
    embedding: torch.Tensor  # (B, D): the backbone's face embedding
    #: the feature maps of the layers a distiller declares (``Distiller.feature_layers``), by module name
    #: within the backbone, e.g. (B, C, H, W); None when none were asked for. The trainer fills it in.
    features: dict[str, torch.Tensor] | None = None


class FaceModel(nn.Module):
    """Backbone and head. It takes faces as ``data.to_tensor`` makes them, (B, C, H, W) float in [0, 1],
    and is the one place they are normalised: with the backbone's own per-channel ``mean`` and ``std``
    (``models.backbones.input_normalisation``), before the backbone sees them."""

    def __init__(self, backbone: nn.Module, embed_dim: int, output_dim: int,
                 mean: Sequence[float] = DEFAULT_MEAN, std: Sequence[float] = DEFAULT_STD):
        super().__init__()
        self.backbone = backbone
        self.embed_dim = embed_dim
        self.head = nn.Linear(embed_dim, output_dim)
        # not persistent: the values come from the backbone, and state_dicts (checkpoints, the run cache)
        # keep the keys they had before the model normalised its inputs
        for name, values in (("input_mean", mean), ("input_std", std)):
            self.register_buffer(name, torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [0, 1] -> what the backbone expects: (x - mean) / std per channel."""
        return (x - self.input_mean) / self.input_std

    def forward(self, x: torch.Tensor) -> ModelOutput:
        emb = self.backbone(self.normalise(x))
        return ModelOutput(self.head(emb), emb)


def build_model(backbone: str, *, in_chans: int, image_size: int, output_dim: int,
                pretrained: bool = False, weights: str | None = None,
                backbone_args: dict[str, Any] | None = None) -> FaceModel:
    """Create the named backbone, check it accepts the image size, put a head on it; the model normalises
    its [0, 1] inputs with the backbone's declared mean and std. ``backbone_args``: keyword arguments of
    the backbone's constructor (``--backbone-arg``); one it does not take is a ``UsageError``."""
    reserved = {"in_chans", "pretrained"} & set(backbone_args or {})
    if reserved:
        raise UsageError(f"backbone option(s) {', '.join(sorted(reserved))} are set by the run itself "
                         "(--channels, --pretrained), not by --backbone-arg")
    kwargs = {"in_chans": in_chans, "pretrained": pretrained or None, **(backbone_args or {})}
    registry("backbones").check_options(backbone, **kwargs)
    net = registry("backbones").create(backbone, **kwargs)
    if weights:
        load_weights(net, weights)
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            probe = net(torch.zeros(2, in_chans, image_size, image_size))
    except RuntimeError as exc:
        raise UsageError(f"backbone '{backbone}' cannot take {image_size}x{image_size} images "
                         f"(too small for its downsampling?): {str(exc).splitlines()[0]}") from exc
    net.train(was_training)
    if probe.ndim != 2:
        raise UsageError(f"backbone '{backbone}' must return (batch, features), returned {tuple(probe.shape)}")
    mean, std = input_normalisation(net, in_chans, backbone)
    return FaceModel(net, int(probe.shape[1]), output_dim, mean=mean, std=std)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a weights file with ``weights_only=True``: code hidden in a pickle is never run."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"weights file not found: {path}")
    from ..io import load_weights_only

    obj = load_weights_only(path, advice=". Save a plain state_dict instead")
    for key in ("state_dict", "model", "backbone"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UsageError(f"{path} does not hold a state_dict of tensors")
    return obj


def load_weights(net: nn.Module, path: str | Path) -> None:
    """Load a backbone state_dict (prefixes ``module.`` / ``backbone.`` are stripped), or a file in the
    backbone's own format when it reads one: a backbone's ``load_weights_file(path)`` returns True when
    it loaded the file (dlib-resnet29 reads dlib's ``.dat``)."""
    own_reader = getattr(net, "load_weights_file", None)
    if callable(own_reader) and Path(path).is_file() and own_reader(path):
        return
    state = read_state_dict(path)
    clean = {}
    for k, v in state.items():
        for prefix in ("module.", "backbone."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        clean[k] = v
    own = net.state_dict()
    missing = [k for k in own if k not in clean]
    if len(missing) == len(own):
        raise UsageError(f"no parameter in {path} matches this backbone (first keys: {list(clean)[:3]})")
    if missing:
        raise UsageError(f"{path} lacks {len(missing)} of the backbone's {len(own)} tensors, "
                         f"e.g. {missing[:3]}")
    shape_bad = [k for k in own if clean[k].shape != own[k].shape]
    if shape_bad:
        k = shape_bad[0]
        raise UsageError(f"{path}: '{k}' has shape {tuple(clean[k].shape)}, the backbone expects "
                         f"{tuple(own[k].shape)} (different architecture, channels or size?)")
    net.load_state_dict({k: clean[k] for k in own}, strict=True)
