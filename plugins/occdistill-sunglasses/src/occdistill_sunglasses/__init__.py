"""``sunglasses``: an occlusion-distill plugin that puts dark glasses over the eyes.

Shapes are defined once, in the face frame of ``FaceFrame`` (origin between the eyes, ``u`` along the eye
line, ``v`` down the face, one unit = the inter-ocular distance), so they follow roll and scale. Per face,
``sample`` draws the style, lens tint, frame colour and a small placement jitter; ``render`` maps every
point to pixels in one matrix product and draws only inside the glasses' bounding box: an opacity
(alpha) and a picture (layer), from which the base class derives both the drawing and the coverage mask.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from occlusion_distill.errors import UsageError
from occlusion_distill.occlusions import FaceFrame, Occlusion
from occlusion_distill.occlusions import raster
from occlusion_distill.occlusions.base import check_choices, check_number

TINTS = {"black": (22, 22, 26), "grey": (58, 60, 64), "brown": (70, 46, 28), "green": (34, 58, 40),
         "blue": (26, 40, 76)}
FRAMES = {"round": [(28, 26, 26), (182, 154, 92)],  # black plastic, gold wire
          "aviator": [(196, 168, 98), (178, 180, 186), (44, 44, 48)],  # gold, silver, gunmetal
          "wayfarer": [(16, 16, 18), (88, 52, 28)]}  # black, tortoise
RIM = {"round": 0.05, "aviator": 0.035, "wayfarer": 0.09}  # frame thickness, in eye distances


def _lens(style: str) -> np.ndarray:
    """Outline of the right-hand lens (image right) around its centre, in eye distances."""
    t = np.linspace(0.0, 2 * np.pi, 32, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    if style == "round":
        return np.stack([0.34 * c, 0.33 * s], 1)
    if style == "aviator":  # flat top, a teardrop that drops lowest towards the nose
        return np.stack([0.42 * c, np.where(s < 0, 0.25, 0.30 + 0.12 * np.maximum(-c, 0)) * s], 1)
    # wayfarer: a rounded box (a superellipse), narrower below, its outer top corner swept up
    x, y = 0.42 * np.sign(c) * np.abs(c) ** 0.4, 0.27 * np.sign(s) * np.abs(s) ** 0.4
    return np.stack([x * (1 - 0.12 * y / 0.27), y - 0.06 * (s < 0) * (x / 0.42 + 1)], 1)


def _geometry(style: str) -> tuple[np.ndarray, dict[str, list[tuple[int, int]]]]:
    """Every point of one style in face units, and where each named part lies in that array."""
    lens, centre = _lens(style), np.array([0.56, 0.04])
    inner, top = centre[0] + lens[:, 0].min(), centre[1] + lens[:, 1].min()
    outer = centre[0] + lens[:, 0].max()
    parts = [("lens", lens + centre), ("lens", lens * [-1, 1] + centre * [-1, 1]),
             ("bridge", [(-inner - 0.02, top + 0.1), (0.0, top + 0.04), (inner + 0.02, top + 0.1)]),
             ("temple", [(outer, top + 0.08), (1.24, -0.04)]), ("temple", [(-outer, top + 0.08), (-1.24, -0.04)])]
    if style == "aviator":  # the top bar of a double bridge
        parts.append(("bridge", [(-centre[0], top - 0.01), (centre[0], top - 0.01)]))
    for cu in (-centre[0], centre[0]):  # a reflection on each lens, both lit from the upper left
        parts.append(("glint", [(cu - 0.2, top + 0.2), (cu - 0.06, top + 0.07)]))
    spans, start = {}, 0
    for name, pts in parts:
        spans.setdefault(name, []).append((start, start + len(pts)))
        start += len(pts)
    return np.concatenate([np.asarray(p, dtype=np.float64) for _, p in parts]), spans


GEOMETRY = {style: _geometry(style) for style in FRAMES}


class Sunglasses(Occlusion):
    """Sunglasses over the eyes: round, aviator or wayfarer; tinted lenses, frame, bridge and temples."""

    version = 1  # raise when the same settings and seed draw different pixels

    def __init__(self, styles: str | Sequence[str] | None = None, tints: str | Sequence[str] | None = None,
                 opacity: float = 0.9, temples: bool = True, jitter: float = 0.03, p: float = 1.0,
                 fill_mask: float | Sequence[float] | None = None):
        super().__init__(p=p, fill_mask=fill_mask)
        self.styles = check_choices(styles, FRAMES, "styles", plugin="sunglasses")
        self.tints = check_choices(tints, TINTS, "tints", plugin="sunglasses")
        self.opacity = check_number(opacity, "opacity", 0.5, 1.0, plugin="sunglasses", unit="1 = opaque lenses")
        if not isinstance(temples, bool):
            raise UsageError(f"sunglasses: temples must be true or false, not {temples!r}")
        self.temples = temples
        self.jitter = check_number(jitter, "jitter", 0, 0.1, plugin="sunglasses", unit="eye distances")

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        # what settings() and config.json show
        return ("styles", "tints", "opacity", "temples", "jitter", "p", "fill_mask")

    def sample(self, landmarks: np.ndarray, shape: tuple[int, int]) -> dict[str, Any]:
        r = self.random_generator.random(7).tolist()  # one draw; each parameter maps its own share
        style = self.styles[int(r[0] * len(self.styles))]
        tint = np.array(TINTS[self.tints[int(r[1] * len(self.tints))]], np.float32)
        tint = np.clip(tint + (r[2] - 0.5) * 16, 0, 255)  # a slightly lighter or darker shade
        return {"frame": FaceFrame.from_landmarks(landmarks), "style": style, "tint": tint,
                "colour": FRAMES[style][int(r[3] * len(FRAMES[style]))],
                "shift": ((2 * r[4] - 1) * self.jitter, (2 * r[5] - 1) * self.jitter), "scale": 0.95 + 0.1 * r[6]}

    def _placed(self, shape: tuple[int, int], params: dict[str, Any]):
        """The crop to draw in, each part's fixed-point polylines there, and line widths (None when off the image)."""
        points, spans = GEOMETRY[params["style"]]
        frame = params["frame"]
        px = frame.to_image(points * params["scale"] + params["shift"])
        rim, arm = max(1, round(RIM[params["style"]] * frame.iod)), max(1, round(0.05 * frame.iod))
        used = [n for n in spans if n != "temple" or self.temples]
        outline = np.concatenate([px[a:b] for n in used for a, b in spans[n]])
        box = raster.bbox(outline, shape, pad=max(rim, arm) // 2 + 2)  # room for the line widths
        if box is None:
            return None
        crop = raster.Crop(box)
        fixed = crop.fixed(px)
        return crop, {n: [fixed[a:b] for a, b in spans[n]] for n in used}, rim, arm

    def _alpha(self, placed) -> np.ndarray:
        crop, parts, rim, arm = placed
        alpha = raster.fill(crop.alpha(), parts["lens"], round(255 * self.opacity))
        raster.lines(alpha, parts["lens"], 255, rim, closed=True)
        raster.lines(alpha, parts["bridge"], 255, rim)
        raster.lines(alpha, parts.get("temple", []), 255, arm)
        return alpha

    def render(self, shape: tuple[int, int], **params: Any):
        """(box, alpha, layer) of the glasses: lenses at ``opacity``, frame and temples opaque."""
        placed = self._placed(shape, params)
        if placed is None:
            return None, None, None
        crop, parts, rim, arm = placed
        tint, colour = params["tint"], params["colour"]
        layer = raster.lit_layer(crop, tint, crop.box[0], crop.box[1], -0.25)  # gradient lenses: darker on top
        raster.lines(layer, parts["glint"], tuple(int(v) for v in np.minimum(tint * 1.6 + 70, 255)), arm)
        raster.lines(layer, parts["lens"], colour, rim, closed=True)
        raster.lines(layer, parts["bridge"], colour, rim)
        raster.lines(layer, parts.get("temple", []), colour, arm)
        return crop.box, self._alpha(placed), layer
