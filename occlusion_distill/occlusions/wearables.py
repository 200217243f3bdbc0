"""``mask`` (surgical mask) and ``vr-headset``: occluders fitted to the face by its landmarks.

Shapes are defined in the face frame of ``regions.FaceFrame`` (eye midpoint origin, eye line axis,
inter-ocular distance as unit), so they follow head roll and scale; colours, variants and a small
placement jitter are sampled per face in ``sample``; drawing touches only the occluder's bounding box
and blends in uint8.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import UsageError
from ..registry import occlusions
from . import raster
from .base import Occlusion
from .regions import FaceFrame

MASK_COLOURS = {
    "light-blue": (164, 200, 228), "white": (236, 238, 240), "black": (38, 38, 44),
    "pink": (232, 180, 196), "green": (150, 200, 170),
}
MASK_VARIANTS = ("surgical", "cloth", "n95")
HEADSET_COLOURS = {"white": (232, 232, 236), "black": (30, 30, 34), "grey": (92, 96, 104), "silver": (180, 184, 190)}


def _colour_choices(colours: Sequence[str] | None, table: dict[str, tuple[int, int, int]], what: str) -> list[str]:
    if colours is None:
        return list(table)
    if isinstance(colours, str):
        colours = [colours]
    bad = [c for c in colours if c not in table]
    if bad or not colours:
        raise UsageError(f"{what}: unknown colour {bad[0] if bad else colours!r}; choose from {', '.join(table)}")
    return list(colours)


def _arc(p0, p1, bulge: float, n: int = 10) -> np.ndarray:
    """Points from p0 to p1 bowed by ``bulge`` (face units) to the right of the direction of travel."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    t = np.linspace(0, 1, n)[:, None]
    d = p1 - p0
    normal = np.array([-d[1], d[0]]) / (np.hypot(*d) + 1e-9)
    return p0 + t * d + normal * bulge * 4 * t * (1 - t)


def _shade(box, frame: FaceFrame, colour, top: float, bottom: float, strength: float) -> np.ndarray:
    """A colour layer over the box, lit from above: lighter at v = top, darker at v = bottom."""
    y0, y1, x0, x1 = box
    ys, xs = np.mgrid[y0:y1, x0:x1]
    v = ((xs + 0.5 - frame.origin[0]) * frame.down[0] + (ys + 0.5 - frame.origin[1]) * frame.down[1]) / frame.iod
    k = np.clip((v - top) / max(bottom - top, 1e-6), 0, 1)
    light = (1.0 + strength) - 2 * strength * k
    return np.clip(np.asarray(colour, float)[None, None] * light[..., None], 0, 255).astype(np.uint8)


@occlusions.register("mask")
class SurgicalMask(Occlusion):
    """Surgical mask fitted by landmarks: nose bridge to below the chin, pleats, straps, colours, variants."""

    def __init__(self, colours: Sequence[str] | None = None, variants: Sequence[str] | None = None,
                 jitter: float = 0.04, p: float = 1.0):
        super().__init__(p=p)
        self.colours = _colour_choices(colours, MASK_COLOURS, "mask")
        variants = list(MASK_VARIANTS) if variants is None else ([variants] if isinstance(variants, str) else list(variants))
        if not variants or any(v not in MASK_VARIANTS for v in variants):
            raise UsageError(f"mask: variants must be among {', '.join(MASK_VARIANTS)}, not {variants!r}")
        self.variants = variants
        if not isinstance(jitter, (int, float)) or not 0 <= jitter <= 0.2:
            raise UsageError(f"mask: jitter must be a number in [0, 0.2] (face units), not {jitter!r}")
        self.jitter = float(jitter)

    def sample(self, landmarks: np.ndarray, shape: tuple[int, int]) -> dict[str, Any]:
        rng = self.random_generator
        frame = FaceFrame.from_landmarks(landmarks)
        lm = frame.landmarks_uv()
        nose_v = float(lm[2, 1])
        mouth_v = float(lm[3:, 1].mean())
        dx, dy = rng.uniform(-self.jitter, self.jitter, 2)
        colour = np.asarray(MASK_COLOURS[self.colours[rng.integers(len(self.colours))]], float)
        colour = np.clip(colour + rng.normal(0, 6, 3), 0, 255)
        return {"frame": frame, "top": 0.40 * nose_v + dy, "mouth": mouth_v + dy, "dx": dx,
                "width": float(rng.uniform(0.98, 1.08)), "colour": colour,
                "variant": self.variants[rng.integers(len(self.variants))],
                "pattern": float(rng.uniform(0, 1)), "shade": float(rng.uniform(0.05, 0.18))}

    @staticmethod
    def _outline(top: float, mouth: float, dx: float, width: float, variant: str) -> np.ndarray:
        w = width * (0.92 if variant == "n95" else 1.0)
        bottom = mouth + (0.95 if variant == "n95" else 0.85)
        right = [(dx + w, top + 0.10), (dx + w * 1.03, mouth + 0.05), (dx + w * 0.72, mouth + 0.60)]
        left = [(2 * dx - x, y) for x, y in right]  # mirror about u = dx
        outline = np.concatenate([
            _arc((dx - w, top + 0.10), (dx + w, top + 0.10), -0.12 if variant != "n95" else -0.2),  # over the nose
            np.array(right[1:]),
            _arc(right[2], left[2], -(bottom - mouth - 0.60)),  # under the chin
            np.array([left[1]]),
        ])
        return outline

    def _geometry(self, params: dict[str, Any]) -> tuple[np.ndarray, list[np.ndarray]]:
        f = params["frame"]
        top, mouth, dx, width, variant = (params[k] for k in ("top", "mouth", "dx", "width", "variant"))
        body = f.to_image(self._outline(top, mouth, dx, width, variant))
        ear = [(dx - 1.12, 0.30), (dx + 1.12, 0.30)]
        straps = [f.to_image(np.array([c, e])) for c, e in (
            ((dx - width, top + 0.12), ear[0]), ((dx + width, top + 0.12), ear[1]),
            ((dx - width * 0.9, mouth + 0.45), ear[0]), ((dx + width * 0.9, mouth + 0.45), ear[1]))]
        return body, straps

    def coverage(self, shape: tuple[int, int], **params: Any) -> np.ndarray:
        box, alpha, _, _ = self._alpha(shape, params)
        return raster.full_mask(shape, box, alpha)

    def _alpha(self, shape, params):
        body, straps = self._geometry(params)
        box = raster.bbox([body, *straps], shape)
        if box is None:
            return None, None, body, straps
        alpha = raster.fill([body], box)
        raster.lines(straps, box, alpha, 255, max(1, int(round(0.05 * params["frame"].iod))))
        return box, alpha, body, straps

    def draw(self, image: np.ndarray, **params: Any) -> np.ndarray:
        box, alpha, body, straps = self._alpha(image.shape, params)
        if box is None:
            return image.copy()
        f = params["frame"]
        colour = params["colour"]
        layer = _shade(box, f, colour, params["top"], params["mouth"] + 0.9, params["shade"])
        thin = max(1, int(round(0.035 * f.iod)))
        dx, top, mouth, width = params["dx"], params["top"], params["mouth"], params["width"]
        fold = np.clip(colour * 0.72, 0, 255)
        if params["variant"] == "surgical":  # three horizontal pleats
            for k in (0.3, 0.55, 0.8):
                v = top + k * (mouth + 0.35 - top)
                raster.lines([f.to_image(_arc((dx - width * 0.98, v), (dx + width * 0.98, v), -0.03))],
                             box, layer, tuple(int(c) for c in fold), thin)
        elif params["variant"] == "n95":  # a centre seam
            raster.lines([f.to_image(np.array([(dx, top - 0.05), (dx, mouth + 0.9)]))], box, layer,
                         tuple(int(c) for c in fold), thin)
        else:  # cloth: a stripe pattern in a second colour
            stripe = np.clip(colour[::-1] * 0.8 + 30, 0, 255)
            for k in np.arange(params["pattern"] * 0.25, 1.0, 0.25):
                v = top + k * (mouth + 0.8 - top)
                raster.lines([f.to_image(np.array([(dx - 1.1, v), (dx + 1.1, v)]))], box, layer,
                             tuple(int(c) for c in stripe), thin + 1)
        strap_colour = tuple(int(c) for c in np.clip(colour * 0.9, 0, 255))
        raster.lines(straps, box, layer, strap_colour, max(1, int(round(0.05 * f.iod))))
        edge = tuple(int(c) for c in np.clip(colour * 0.6, 0, 255))
        raster.lines([np.concatenate([body, body[:1]])], box, layer, edge, thin)
        return raster.paint(image, box, alpha, layer)


@occlusions.register("vr-headset")
class VRHeadset(Occlusion):
    """VR headset over eyes and brows, wider than the face, with strap, shading and slight perspective."""

    def __init__(self, colours: Sequence[str] | None = None, perspective: float = 0.08, p: float = 1.0):
        super().__init__(p=p)
        self.colours = _colour_choices(colours, HEADSET_COLOURS, "vr-headset")
        if not isinstance(perspective, (int, float)) or not 0 <= perspective <= 0.3:
            raise UsageError(f"vr-headset: perspective must be a number in [0, 0.3], not {perspective!r}")
        self.perspective = float(perspective)

    def sample(self, landmarks: np.ndarray, shape: tuple[int, int]) -> dict[str, Any]:
        rng = self.random_generator
        colour = np.asarray(HEADSET_COLOURS[self.colours[rng.integers(len(self.colours))]], float)
        return {"frame": FaceFrame.from_landmarks(landmarks), "colour": np.clip(colour + rng.normal(0, 5, 3), 0, 255),
                "tilt": float(rng.uniform(-self.perspective, self.perspective)),
                "dy": float(rng.uniform(-0.03, 0.03)), "width": float(rng.uniform(1.22, 1.32)),
                "shade": float(rng.uniform(0.10, 0.25))}

    @staticmethod
    def _corners(params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        w, dy, t = params["width"], params["dy"], params["tilt"]
        top, bottom = -0.66 + dy, 0.34 + dy
        # perspective: one side taller than the other, as if the head turned slightly
        left = (top - t * 0.5, bottom + t * 0.5)
        right = (top + t * 0.5, bottom - t * 0.5)
        r = 0.16  # corner rounding
        body = np.array([(-w + r, left[0]), (w - r, right[0]), (w, right[0] + r), (w, right[1] - r),
                         (w - r, right[1]), (0.22, bottom), (0.0, bottom - 0.10), (-0.22, bottom),
                         (-w + r, left[1]), (-w, left[1] - r), (-w, left[0] + r)])
        strap = np.array([(-w - 0.5, -0.26 + dy), (w + 0.5, -0.26 + dy), (w + 0.5, -0.02 + dy), (-w - 0.5, -0.02 + dy)])
        return body, strap

    def _alpha(self, shape, params):
        f = params["frame"]
        body, strap = (f.to_image(p) for p in self._corners(params))
        box = raster.bbox([body, strap], shape)
        if box is None:
            return None, None, body, strap
        return box, raster.fill([body, strap], box), body, strap

    def coverage(self, shape: tuple[int, int], **params: Any) -> np.ndarray:
        box, alpha, _, _ = self._alpha(shape, params)
        return raster.full_mask(shape, box, alpha)

    def draw(self, image: np.ndarray, **params: Any) -> np.ndarray:
        box, alpha, body, strap = self._alpha(image.shape, params)
        if box is None:
            return image.copy()
        f, colour = params["frame"], params["colour"]
        strap_layer = np.clip(colour * 0.45 + 10, 0, 255)
        layer = _shade(box, f, colour, -0.7, 0.4, params["shade"])
        strap_only = raster.fill([strap], box) >= 128
        strap_only &= ~(raster.fill([body], box) >= 128)
        layer[strap_only] = strap_layer.astype(np.uint8)
        w, dy = params["width"], params["dy"]
        panel = f.to_image(np.array([(-w * 0.7, -0.48 + dy), (w * 0.7, -0.48 + dy), (w * 0.7, 0.12 + dy),
                                     (-w * 0.7, 0.12 + dy), (-w * 0.7, -0.48 + dy)]))
        thin = max(1, int(round(0.03 * f.iod)))
        raster.lines([panel], box, layer, tuple(int(c) for c in np.clip(colour * 0.75 + 20, 0, 255)), thin)
        raster.lines([np.concatenate([body, body[:1]])], box, layer,
                     tuple(int(c) for c in np.clip(colour * 0.55, 0, 255)), thin)
        return raster.paint(image, box, alpha, layer)
