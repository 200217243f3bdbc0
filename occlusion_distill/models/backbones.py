"""Backbone plugins: a network that maps a face to an embedding (``num_features`` wide).

A backbone factory is called as ``factory(in_chans=..., pretrained=...)``. Any timm model name works
(``timm.create_model(name, num_classes=0, in_chans=...)``); a few are registered with a description so
``occdistill list`` shows sensible choices, and facenet-pytorch's ``InceptionResnetV1`` is registered
as ``inception-resnet-v1`` (VGGFace2 weights with ``--pretrained``).

A backbone also says what inputs it expects: ``input_normalisation`` reads its mean and std (of images
scaled to [0, 1]), and ``FaceModel`` applies them, so no caller normalises a face itself.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import torch
import torch.nn as nn

from ..errors import OccdistillError, PluginError, UsageError
from ..config import DEFAULT_BACKBONE  # noqa: F401  (re-exported: the backbone a run gets by default)
from ..registry import Entry, backbones

#: what a backbone that declares nothing gets: (x - 0.5) / 0.5, the [-1, 1] inputs of earlier versions
DEFAULT_MEAN, DEFAULT_STD = (0.5,), (0.5,)


class PretrainedUnavailable(OccdistillError):
    """Pretrained weights could not be fetched (usually: no access to the model hub)."""


def _timm(model_name: str, in_chans: int = 3, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    import logging

    import timm

    # The hub client logs every retry; the one-line error below says what matters.
    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.CRITICAL)
    try:
        return timm.create_model(model_name, pretrained=pretrained, num_classes=0, in_chans=in_chans, **kwargs)
    except Exception as exc:
        if pretrained:
            raise PretrainedUnavailable(
                f"could not get pretrained weights for '{model_name}' ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); without hub access, "
                f"download them elsewhere and pass --weights PATH") from exc
        raise UsageError(f"timm could not build '{model_name}': {exc}") from exc
    finally:
        hub_log.setLevel(level)


_CURATED = {
    "resnet10t": "timm ResNet-10-T: a small ResNet that trains from scratch on CPU",
    "resnet18": "timm ResNet-18",
    "resnet50": "timm ResNet-50 (GPU-sized)",
    "mobilenetv3_small_100": "timm MobileNetV3-Small: the lightest choice",
    "efficientnet_b0": "timm EfficientNet-B0",
    "vgg11_bn": "timm VGG-11 with BatchNorm (close to the paper's VGG family)",
}


def _curated(model_name: str) -> Any:
    factory = partial(_timm, model_name)
    factory.__doc__ = _CURATED[model_name]  # the description `occdistill list` shows
    return factory


# module attributes, so that the package's entry points can name them
resnet10t = _curated("resnet10t")
resnet18 = _curated("resnet18")
resnet50 = _curated("resnet50")
mobilenetv3_small_100 = _curated("mobilenetv3_small_100")
efficientnet_b0 = _curated("efficientnet_b0")
vgg11_bn = _curated("vgg11_bn")


def _timm_fallback(name: str) -> Entry | None:
    import timm

    model_name = name[len("timm:"):] if name.startswith("timm:") else name
    if not timm.is_model(model_name):
        return None
    return Entry(name=name, obj=partial(_timm, model_name), description=f"timm model {model_name}",
                 origin=f"timm=={timm.__version__}")


def _timm_names() -> list[str]:
    import timm

    return timm.list_models()


backbones.set_fallback(_timm_fallback, _timm_names)


def input_normalisation(net: nn.Module, in_chans: int,
                        name: str | None = None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The per-channel (mean, std) that ``net`` expects of images scaled to [0, 1]: ``in_chans`` values each.

    Read from, in order: the backbone's own ``input_mean`` / ``input_std`` attributes (one value, or one
    per channel); timm's data config of the model (``pretrained_cfg``, the same whether or not the
    weights were loaded, so ``--weights`` files of those weights get it too); else ``DEFAULT_MEAN`` /
    ``DEFAULT_STD``. A grey backbone (``in_chans`` 1) declared for RGB gets the mean of the three means and
    of the three stds: timm builds a 1-channel stem from the sum of its RGB filters, which reads a grey
    value as that value in R, G and B. Raises ``PluginError`` (naming the backbone ``name``) for a
    declaration of the wrong length, a value that is not finite or a std that is not positive.
    """
    who = f"'{name}'" if name else type(net).__name__
    mean, std = getattr(net, "input_mean", None), getattr(net, "input_std", None)
    if (mean is None) != (std is None):
        raise PluginError(f"backbone {who} declares only one of input_mean and input_std: declare both")
    if mean is None and isinstance(getattr(net, "pretrained_cfg", None), dict):
        import timm.data

        config = timm.data.resolve_model_data_config(net)
        mean, std = config["mean"], config["std"]
    elif mean is None:
        mean, std = DEFAULT_MEAN, DEFAULT_STD
    out = []
    for what, values in (("means", mean), ("stds", std)):
        try:
            values = (float(values),) if isinstance(values, (int, float)) else tuple(float(v) for v in values)
        except (TypeError, ValueError):
            raise PluginError(f"backbone {who} declares input {what} {values!r}: give numbers") from None
        if in_chans == 1 and len(values) == 3:
            values = (sum(values) / 3,)
        elif len(values) == 1:
            values = values * in_chans
        if len(values) != in_chans:
            raise PluginError(f"backbone {who} declares {len(values)} input {what} for "
                              f"{in_chans}-channel images (give one, or one per channel)")
        out.append(values)
    if not all(math.isfinite(v) for v in out[0]) or not all(math.isfinite(v) and v > 0 for v in out[1]):
        raise PluginError(f"backbone {who} declares input mean {out[0]} and std {out[1]}: "
                          f"each must be finite, and each std positive")
    return out[0], out[1]


class _GreyToRGB(nn.Module):
    """Feeds a grey face to a network built for RGB by repeating the channel."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x)


def inception_resnet_v1(in_chans: int = 3, pretrained: bool = False) -> nn.Module:
    """facenet-pytorch InceptionResnetV1, 512-d; --pretrained loads its VGGFace2 weights (needs internet)."""
    from facenet_pytorch import InceptionResnetV1

    try:
        net = InceptionResnetV1(pretrained="vggface2" if pretrained else None, classify=False)
    except Exception as exc:
        raise PretrainedUnavailable(
            f"could not download the VGGFace2 weights of InceptionResnetV1 ({type(exc).__name__}); "
            f"without internet, fetch them elsewhere and pass --weights PATH") from exc
    net.num_features = 512
    net = _GreyToRGB(net) if in_chans == 1 else net
    # facenet-pytorch's fixed_image_standardization, (pixel - 127.5) / 128, the same for every channel
    net.input_mean, net.input_std = (0.5,), (128 / 255,)
    return net


class SimpleCNN(nn.Module):
    """VGG-style blocks (3x3 conv, BatchNorm, ReLU, 2x2 max-pool) and global average pooling.

    It keeps full resolution in its first block, so the small cues of small faces survive; it is the
    kind of network the FER literature trains from scratch on 48 px faces.
    """

    def __init__(self, in_chans: int = 3, widths: tuple[int, ...] = (24, 48, 96, 192), double_from: int = 2):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_chans
        for i, w in enumerate(widths):
            convs = 2 if i >= double_from else 1
            for _ in range(convs):
                layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
                c = w
            layers.append(nn.MaxPool2d(2))
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.num_features = c
        self.input_mean, self.input_std = DEFAULT_MEAN, DEFAULT_STD  # [-1, 1], as it was always trained

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def simple_cnn(in_chans: int = 3, pretrained: bool = False, widths: tuple[int, ...] = (24, 48, 96, 192)) -> nn.Module:
    """The default: a 4-block VGG-style CNN (~0.6 M parameters) that trains from scratch on 2 CPU cores."""
    if pretrained:
        raise UsageError("simple-cnn has no pretrained weights; train it from scratch or pass --weights PATH")
    return SimpleCNN(in_chans, tuple(widths))
