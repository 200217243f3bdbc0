"""``mask`` (surgical mask) and ``vr-headset``: occluders fitted to the face by its landmarks.

Shapes are defined in the face frame of ``regions.FaceFrame`` (eye midpoint origin, eye line axis,
inter-ocular distance as unit), so they follow head roll and scale; colours, variants and a small
placement jitter are sampled per face in ``sample``; drawing touches only the occluder's bounding box:
shapes are mapped to pixels in one matrix product and blended into the uint8 image by OpenCV.
"""

from __future__ import annotations

import math
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
HEADSET_FINISHES = ("matte", "gloss", "fabric")
HEADSET_COLOURS = {"white": (232, 232, 236), "black": (30, 30, 34), "grey": (92, 96, 104), "silver": (180, 184, 190)}


def _colour_choices(colours: Sequence[str] | None, table: dict[str, tuple[int, int, int]], what: str) -> list[str]:
    if colours is None:
        return list(table)
    if isinstance(colours, str):  # one name, or names separated by commas (as typed on the command line)
        colours = [c.strip() for c in colours.split(",")]
    if not isinstance(colours, (list, tuple)):
        raise UsageError(f"{what}: colours must be names among {', '.join(table)}, not {colours!r}")
    bad = [c for c in colours if c not in table]
    if bad or not colours:
        raise UsageError(f"{what}: unknown colour {bad[0] if bad else colours!r}; choose from {', '.join(table)}")
    return list(colours)


_T = np.linspace(0.0, 1.0, 9)[:, None]
_BOW = 4.0 * _T * (1.0 - _T)


def _arcs(specs: list[tuple[tuple[float, float], tuple[float, float], float]]) -> np.ndarray:
    """(k, 9, 2) points of k arcs, each from p0 to p1 bowed by ``bulge`` (face units) to the right of travel."""
    rows = []
    for (x0, y0), (x1, y1), bulge in specs:
        dx, dy = x1 - x0, y1 - y0
        b = bulge / (math.hypot(dx, dy) + 1e-9)
        rows.append((x0, y0, dx, dy, -dy * b, dx * b))
    a = np.array(rows)[:, None, :]
    return a[..., 0:2] + _T * a[..., 2:4] + _BOW * a[..., 4:6]


class _Shapes:
    """Named polylines in face units, mapped to pixels together: one matrix product, one fixed-point conversion."""

    def __init__(self) -> None:
        self.parts: list[np.ndarray] = []
        self.names: list[str] = []

    def add(self, name: str, uv) -> None:
        self.parts.append(np.asarray(uv, dtype=np.float64))
        self.names.append(name)

    def place(self, frame: FaceFrame, shape: tuple[int, int], outer: tuple[str, ...]) -> "_Placed | None":
        """Pixel positions, and the crop around the parts named in ``outer`` (None when off the image)."""
        px = frame.to_image(np.concatenate(self.parts))
        ends = np.cumsum([len(p) for p in self.parts]).tolist()
        spans = list(zip(self.names, [0] + ends[:-1], ends))
        rim = np.concatenate([px[a:b] for n, a, b in spans if n in outer])
        box = raster.bbox(rim, shape)
        if box is None:
            return None
        crop = raster.Crop(box)
        return _Placed(crop, px, crop.fixed(px), spans)


class _Placed:
    """Shapes placed on one image: fixed-point crop coordinates by name, for cv2."""

    def __init__(self, crop: raster.Crop, px: np.ndarray, fixed: np.ndarray, spans: list[tuple[str, int, int]]):
        self.crop = crop
        self.px = px
        self.spans = {name: (a, b) for name, a, b in spans}
        self.parts: dict[str, list[np.ndarray]] = {}
        for name, a, b in spans:
            self.parts.setdefault(name, []).append(fixed[a:b])

    def pixels(self, name: str) -> np.ndarray:
        """Whole-image pixel coordinates of a part (its last occurrence)."""
        a, b = self.spans[name]
        return self.px[a:b]

    def __getitem__(self, name: str) -> list[np.ndarray]:
        return self.parts.get(name, [])


def _tones(colour: np.ndarray, scales: np.ndarray, offsets: np.ndarray) -> list[tuple[int, int, int]]:
    """Darker/lighter versions of a colour (one row per scale and offset) as cv2 colour tuples."""
    return [tuple(t) for t in np.clip(colour[None] * scales[:, None] + offsets[:, None], 0, 255).astype(int).tolist()]


@occlusions.register("mask")
class SurgicalMask(Occlusion):
    """Surgical mask fitted by landmarks: nose bridge to below the chin, pleats, straps, colours, variants."""

    version = 2  # 2: drawn from one matrix product per face, light from above (was shaded in the face frame)

    def __init__(self, colours: Sequence[str] | None = None, variants: Sequence[str] | None = None,
                 jitter: float = 0.04, p: float = 1.0, fill_mask: float | Sequence[float] | None = None):
        super().__init__(p=p, fill_mask=fill_mask)
        self.colours = _colour_choices(colours, MASK_COLOURS, "mask")
        if isinstance(variants, str):
            variants = [v.strip() for v in variants.split(",")]
        variants = list(MASK_VARIANTS) if variants is None else variants
        if not isinstance(variants, (list, tuple)) or not variants or any(v not in MASK_VARIANTS for v in variants):
            raise UsageError(f"mask: variants must be among {', '.join(MASK_VARIANTS)}, not {variants!r}")
        self.variants = variants
        if not isinstance(jitter, (int, float)) or not 0 <= jitter <= 0.2:
            raise UsageError(f"mask: jitter must be a number in [0, 0.2] (face units), not {jitter!r}")
        self.jitter = float(jitter)

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

    def _placed(self, shape: tuple[int, int], params: dict[str, Any]) -> _Placed | None:
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
        arcs = _arcs(arcs)
        shapes = _Shapes()
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
    def _alpha(placed: _Placed, iod: float) -> np.ndarray:
        alpha = raster.fill(placed.crop.alpha(), placed["body"], 255)
        raster.lines(alpha, placed["strap"], 255, round(0.05 * iod))
        return alpha

    def coverage(self, shape: tuple[int, int], **params: Any) -> np.ndarray:
        placed = self._placed(shape, params)
        if placed is None:
            return np.zeros(shape[:2], dtype=bool)
        return raster.full_mask(shape, placed.crop.box, self._alpha(placed, params["frame"].iod))

    def draw(self, image: np.ndarray, **params: Any) -> np.ndarray:
        placed = self._placed(image.shape, params)
        if placed is None:
            return image.copy()
        f, colour = params["frame"], params["colour"]
        iod = f.iod
        top, bottom = placed.pixels("light")[:, 1].tolist()
        layer = raster.lit_layer(placed.crop, colour, top, bottom, params["shade"])
        thin = round(0.035 * iod)
        fold, _, strap, edge = _tones(colour, *self._TONES)
        stripe = _tones(colour[::-1], *self._TONES)[1]
        raster.lines(layer, placed["fold"], fold, thin)
        raster.lines(layer, placed["stripe"], stripe, thin + 1)
        raster.lines(layer, placed["strap"], strap, round(0.05 * iod))
        raster.lines(layer, placed["body"], edge, thin, closed=True)
        return raster.paint(image, placed.crop.box, self._alpha(placed, iod), layer)


@occlusions.register("vr-headset")
class VRHeadset(Occlusion):
    """VR headset over eyes and brows, wider than the face: strap, shading, finishes and slight perspective."""

    version = 2  # 2: matte / gloss / fabric finishes, light from above

    def __init__(self, colours: Sequence[str] | None = None, perspective: float = 0.08, p: float = 1.0,
                 fill_mask: float | Sequence[float] | None = None):
        super().__init__(p=p, fill_mask=fill_mask)
        self.colours = _colour_choices(colours, HEADSET_COLOURS, "vr-headset")
        if not isinstance(perspective, (int, float)) or not 0 <= perspective <= 0.3:
            raise UsageError(f"vr-headset: perspective must be a number in [0, 0.3], not {perspective!r}")
        self.perspective = float(perspective)

    def sample(self, landmarks: np.ndarray, shape: tuple[int, int]) -> dict[str, Any]:
        r = self.random_generator.random(9).tolist()  # one draw: each parameter maps its own share
        base = HEADSET_COLOURS[self.colours[int(r[0] * len(self.colours))]]
        colour = np.clip(np.array(base, dtype=np.float32) + (np.array(r[1:4], dtype=np.float32) - 0.5) * 16, 0, 255)
        return {"frame": FaceFrame.from_landmarks(landmarks), "colour": colour,
                "tilt": (2 * r[4] - 1) * self.perspective, "dy": (2 * r[5] - 1) * 0.03,
                "width": 1.22 + 0.10 * r[6], "shade": 0.10 + 0.15 * r[7],
                "finish": HEADSET_FINISHES[int(r[8] * len(HEADSET_FINISHES))]}

    def _placed(self, shape: tuple[int, int], params: dict[str, Any]) -> _Placed | None:
        w, dy, t = params["width"], params["dy"], params["tilt"]
        top, bottom = -0.66 + dy, 0.34 + dy
        # perspective: one side taller than the other, as if the head turned slightly
        left = (top - t * 0.5, bottom + t * 0.5)
        right = (top + t * 0.5, bottom - t * 0.5)
        r = 0.16  # corner rounding
        shapes = _Shapes()
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
    def _alphas(placed: _Placed) -> tuple[np.ndarray, np.ndarray]:
        body = raster.fill(placed.crop.alpha(), placed["body"], 255)
        strap = raster.fill(placed.crop.alpha(), placed["strap"], 255)
        return body, strap

    def coverage(self, shape: tuple[int, int], **params: Any) -> np.ndarray:
        placed = self._placed(shape, params)
        if placed is None:
            return np.zeros(shape[:2], dtype=bool)
        body, strap = self._alphas(placed)
        return raster.full_mask(shape, placed.crop.box, np.maximum(body, strap))

    def draw(self, image: np.ndarray, **params: Any) -> np.ndarray:
        placed = self._placed(image.shape, params)
        if placed is None:
            return image.copy()
        f, colour = params["frame"], params["colour"]
        top, bottom = placed.pixels("light")[:, 1].tolist()
        layer = raster.lit_layer(placed.crop, colour, top, bottom, params["shade"])
        body, strap = self._alphas(placed)
        strap_tone, panel_tone, edge_tone, gloss_tone, seam_tone = _tones(colour, *self._TONES)
        layer[(strap >= 128) & (body < 128)] = strap_tone
        thin = round(0.03 * f.iod)
        raster.fill(layer, placed["gloss"], gloss_tone)
        raster.lines(layer, placed["seam"], seam_tone, thin)
        raster.lines(layer, placed["panel"], panel_tone, thin, closed=True)
        raster.lines(layer, placed["body"], edge_tone, thin, closed=True)
        return raster.paint(image, placed.crop.box, np.maximum(body, strap), layer)
