"""``vr-headset``: a VR headset over the eyes and brows, wider than the face, fitted by its landmarks.

Colour, finish, strap and a slight perspective are sampled per face in ``sample``; drawing touches only
the headset's bounding box (shapes from ``shapes.Shapes``, blended by OpenCV).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from . import raster
from .base import Occlusion, Rendered, check_choices, check_number
from .regions import FaceFrame
from .shapes import Placed, Shapes, tones

HEADSET_FINISHES = ("matte", "gloss", "fabric")
HEADSET_COLOURS = {"white": (232, 232, 236), "black": (30, 30, 34), "grey": (92, 96, 104), "silver": (180, 184, 190)}


class VRHeadset(Occlusion):
    """VR headset over eyes and brows, wider than the face: strap, shading, finishes and slight perspective."""

    version = 2  # 2: matte / gloss / fabric finishes, light from above

    def __init__(self, colours: Sequence[str] | None = None, perspective: float = 0.08, p: float = 1.0,
                 fill_mask: float | Sequence[float] | None = None):
        super().__init__(p=p, fill_mask=fill_mask)
        self.colours = check_choices(colours, HEADSET_COLOURS, "colours", plugin="vr-headset")
        self.perspective = check_number(perspective, "perspective", 0, 0.3, plugin="vr-headset")

    def sample(self, landmarks: np.ndarray, shape: tuple[int, int]) -> dict[str, Any]:
        r = self.random_generator.random(9).tolist()  # one draw: each parameter maps its own share
        base = HEADSET_COLOURS[self.colours[int(r[0] * len(self.colours))]]
        colour = np.clip(np.array(base, dtype=np.float32) + (np.array(r[1:4], dtype=np.float32) - 0.5) * 16, 0, 255)
        return {"frame": FaceFrame.from_landmarks(landmarks), "colour": colour,
                "tilt": (2 * r[4] - 1) * self.perspective, "dy": (2 * r[5] - 1) * 0.03,
                "width": 1.22 + 0.10 * r[6], "shade": 0.10 + 0.15 * r[7],
                "finish": HEADSET_FINISHES[int(r[8] * len(HEADSET_FINISHES))]}

    def _placed(self, shape: tuple[int, int], params: dict[str, Any]) -> Placed | None:
        w, dy, t = params["width"], params["dy"], params["tilt"]
        top, bottom = -0.66 + dy, 0.34 + dy
        # perspective: one side taller than the other, as if the head turned slightly
        left = (top - t * 0.5, bottom + t * 0.5)
        right = (top + t * 0.5, bottom - t * 0.5)
        r = 0.16  # corner rounding
        shapes = Shapes()
        shapes.add("body", [(-w + r, left[0]), (w - r, right[0]), (w, right[0] + r), (w, right[1] - r),
                            (w - r, right[1]), (0.22, bottom), (0.0, bottom - 0.10), (-0.22, bottom),
                            (-w + r, left[1]), (-w, left[1] - r), (-w, left[0] + r)])
        shapes.add("strap", [(-w - 0.5, -0.26 + dy), (w + 0.5, -0.26 + dy), (w + 0.5, -0.02 + dy),
                             (-w - 0.5, -0.02 + dy)])
        shapes.add("panel", [(-w * 0.7, -0.48 + dy), (w * 0.7, -0.48 + dy), (w * 0.7, 0.12 + dy),
                             (-w * 0.7, 0.12 + dy)])
        if params.get("finish") == "gloss":  # a slanted highlight across the front panel
            shapes.add("gloss", [(-w * 0.55, -0.44 + dy), (-w * 0.25, -0.44 + dy), (-w * 0.45, 0.08 + dy),
                                 (-w * 0.75 + 0.1, 0.08 + dy)])
        elif params.get("finish") == "fabric":  # a padded fabric cover: fine horizontal seams
            for v in np.linspace(-0.40, 0.04, 5):
                shapes.add("seam", [(-w * 0.66, v + dy), (w * 0.66, v + dy)])
        shapes.add("light", [(0.0, -0.7), (0.0, 0.4)])
        return shapes.place(params["frame"], shape, outer=("body", "strap"))

    _TONES = (np.array([0.45, 0.75, 0.55, 1.0, 0.82]), np.array([10.0, 20.0, 0.0, 45.0, 0.0]))  # strap, panel,
    # edge, gloss, seam

    @staticmethod
    def _alphas(placed: Placed) -> tuple[np.ndarray, np.ndarray]:
        body = raster.fill(placed.crop.alpha(), placed["body"], 255)
        strap = raster.fill(placed.crop.alpha(), placed["strap"], 255)
        return body, strap

    def render(self, shape: tuple[int, int], **params: Any) -> Rendered:
        placed = self._placed(shape, params)
        if placed is None:
            return None, None, None
        f, colour = params["frame"], params["colour"]
        top, bottom = placed.pixels("light")[:, 1].tolist()
        layer = raster.lit_layer(placed.crop, colour, top, bottom, params["shade"])
        body, strap = self._alphas(placed)
        strap_tone, panel_tone, edge_tone, gloss_tone, seam_tone = tones(colour, *self._TONES)
        layer[(strap >= 128) & (body < 128)] = strap_tone
        thin = round(0.03 * f.iod)
        raster.fill(layer, placed["gloss"], gloss_tone)
        raster.lines(layer, placed["seam"], seam_tone, thin)
        raster.lines(layer, placed["panel"], panel_tone, thin, closed=True)
        raster.lines(layer, placed["body"], edge_tone, thin, closed=True)
        return placed.crop.box, np.maximum(body, strap), layer
