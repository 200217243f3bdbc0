"""``mask``: a surgical, cloth or N95 mask fitted to the face by its landmarks, from the nose bridge to below the chin.

Colours, variants and a small placement jitter are sampled per face in ``sample``; drawing touches only
the mask's bounding box (shapes from ``shapes.Shapes``, blended by OpenCV).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from . import raster
from .base import Occlusion, Rendered, check_choices, check_number
from .regions import FaceFrame
from .shapes import Placed, Shapes, arc_points, tones

MASK_COLOURS = {
    "light-blue": (164, 200, 228), "white": (236, 238, 240), "black": (38, 38, 44),
    "pink": (232, 180, 196), "green": (150, 200, 170),
}
MASK_VARIANTS = ("surgical", "cloth", "n95")


class SurgicalMask(Occlusion):
    """Surgical mask fitted by landmarks: nose bridge to below the chin, pleats, straps, colours, variants."""

    version = 2  # 2: drawn from one matrix product per face, light from above (was shaded in the face frame)

    def __init__(self, colours: Sequence[str] | None = None, variants: Sequence[str] | None = None,
                 jitter: float = 0.04, p: float = 1.0, fill_mask: float | Sequence[float] | None = None):
        super().__init__(p=p, fill_mask=fill_mask)
        self.colours = check_choices(colours, MASK_COLOURS, "colours", plugin="mask")
        self.variants = check_choices(variants, MASK_VARIANTS, "variants", plugin="mask")
        self.jitter = check_number(jitter, "jitter", 0, 0.2, plugin="mask", unit="face units")

    def sample(self, landmarks: np.ndarray, shape: tuple[int, int]) -> dict[str, Any]:
        frame = FaceFrame.from_landmarks(landmarks)
        lm = frame.landmarks_uv()
        nose_v, mouth_v = float(lm[2, 1]), float(lm[3, 1] + lm[4, 1]) / 2
        r = self.random_generator.random(10).tolist()  # one draw: each parameter maps its own share
        dx, dy = (2 * r[0] - 1) * self.jitter, (2 * r[1] - 1) * self.jitter
        base = MASK_COLOURS[self.colours[int(r[2] * len(self.colours))]]
        colour = np.clip(np.array(base, dtype=np.float32) + (np.array(r[3:6], dtype=np.float32) - 0.5) * 20, 0, 255)
        return {"frame": frame, "top": 0.40 * nose_v + dy, "mouth": mouth_v + dy, "dx": dx,
                "width": 0.98 + 0.10 * r[6], "colour": colour,
                "variant": self.variants[int(r[7] * len(self.variants))],
                "pattern": r[8], "shade": 0.05 + 0.13 * r[9]}

    def _placed(self, shape: tuple[int, int], params: dict[str, Any]) -> Placed | None:
        top, mouth, dx, width, variant = (params[k] for k in ("top", "mouth", "dx", "width", "variant"))
        w = width * (0.92 if variant == "n95" else 1.0)
        bottom = mouth + (0.95 if variant == "n95" else 0.85)
        right = [(dx + w, top + 0.10), (dx + w * 1.03, mouth + 0.05), (dx + w * 0.72, mouth + 0.60)]
        left = [(2 * dx - x, y) for x, y in right]  # mirror about u = dx
        arcs = [(left[0], right[0], -0.2 if variant == "n95" else -0.12),  # over the nose
                (right[2], left[2], -(bottom - mouth - 0.60))]  # under the chin
        if variant == "surgical":  # three horizontal pleats
            for k in (0.3, 0.55, 0.8):
                v = top + k * (mouth + 0.35 - top)
                arcs.append(((dx - width * 0.98, v), (dx + width * 0.98, v), -0.03))
        arcs = arc_points(arcs)
        shapes = Shapes()
        shapes.add("body", np.concatenate([arcs[0], right[1:], arcs[1], left[1:2]]))
        ear_l, ear_r = (dx - 1.12, 0.30), (dx + 1.12, 0.30)
        for a, b in (((dx - width, top + 0.12), ear_l), ((dx + width, top + 0.12), ear_r),
                     ((dx - width * 0.9, mouth + 0.45), ear_l), ((dx + width * 0.9, mouth + 0.45), ear_r)):
            shapes.add("strap", [a, b])
        for pleat in arcs[2:]:
            shapes.add("fold", pleat)
        if variant == "n95":  # a centre seam
            shapes.add("fold", [(dx, top - 0.05), (dx, mouth + 0.9)])
        else:  # cloth: a stripe pattern in a second colour
            for k in np.arange(params["pattern"] * 0.25, 1.0, 0.25):
                v = top + k * (mouth + 0.8 - top)
                shapes.add("stripe", [(dx - 1.1, v), (dx + 1.1, v)])
        shapes.add("light", [(0.0, top), (0.0, mouth + 0.9)])  # where the light is full and where it fades
        return shapes.place(params["frame"], shape, outer=("body", "strap"))

    _TONES = (np.array([0.72, 0.8, 0.9, 0.6]), np.array([0.0, 30.0, 0.0, 0.0]))  # fold, stripe, strap, edge

    @staticmethod
    def _alpha(placed: Placed, iod: float) -> np.ndarray:
        alpha = raster.fill(placed.crop.alpha(), placed["body"], 255)
        raster.lines(alpha, placed["strap"], 255, round(0.05 * iod))
        return alpha

    def render(self, shape: tuple[int, int], **params: Any) -> Rendered:
        placed = self._placed(shape, params)
        if placed is None:
            return None, None, None
        f, colour = params["frame"], params["colour"]
        iod = f.iod
        top, bottom = placed.pixels("light")[:, 1].tolist()
        layer = raster.lit_layer(placed.crop, colour, top, bottom, params["shade"])
        thin = round(0.035 * iod)
        fold, _, strap, edge = tones(colour, *self._TONES)
        stripe = tones(colour[::-1], *self._TONES)[1]
        raster.lines(layer, placed["fold"], fold, thin)
        raster.lines(layer, placed["stripe"], stripe, thin + 1)
        raster.lines(layer, placed["strap"], strap, round(0.05 * iod))
        raster.lines(layer, placed["body"], edge, thin, closed=True)
        return placed.crop.box, self._alpha(placed, iod), layer
