"""``synthfaces``: procedural faces with 5 landmarks and expression, gender and age labels.

The built-in data set: no download, deterministic per seed, any size >= 32 px, grey or RGB. It exists
so the whole teacher -> student protocol can run anywhere in minutes, so its cues are designed like
real faces' cues, spread over the face:

* expression (7 classes, FER2013 order) shows in the mouth (curve, opening, width, asymmetry) *and* in
  the brows and eyes (raise, inner tilt, openness, nose wrinkle), each with its own noise, so either
  half alone still tells most classes apart but less surely than the whole face;
* gender shows in hair length, brow thickness (upper face) and in jaw, lips and beard (lower face);
* age (years) shows in forehead lines, crow's feet, grey hair (upper face), in nasolabial folds and
  jowls (lower face), and in child proportions (whole face).

Each face has an expression intensity; weak expressions drift toward neutral, so some faces are
ambiguous and a clean-face teacher's soft outputs carry more than the hard label. Training labels
can be corrupted on purpose (``label_noise``), as crowd labels of real data sets are; validation and
test labels are always the true ones.

Landmarks follow MTCNN's order and convention: image-left eye, image-right eye, nose tip, image-left
mouth corner, image-right mouth corner, as (x, y) pixel coordinates of the returned image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from ...errors import UsageError
from ..faceset import FaceSet

EXPRESSIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
GENDERS = ("male", "female")
MIN_SIZE = 32
#: bump whenever a change to this file changes the faces a seed draws: it keys every cache built on them
GENERATOR_VERSION = 2
AGE_RANGE = (1.0, 80.0)

# Per expression: mouth curve (+ smile), mouth open, mouth width factor, corner asymmetry,
# brow raise, brow inner tilt (+ inner end up), eye openness factor, nose wrinkle.
_EXPR = np.array([
    # curve  open  width  asym  raise  tilt  eye   wrinkle
    [-0.15, 0.00, 0.88, 0.00, -0.55, -1.00, 0.72, 0.15],  # angry
    [-0.35, 0.10, 0.95, 0.85, -0.35, -0.55, 0.68, 1.00],  # disgust
    [-0.25, 0.75, 1.14, 0.00, 0.65, 0.90, 1.50, 0.00],    # fear
    [1.00, 0.25, 1.16, 0.00, 0.05, 0.00, 0.70, 0.00],     # happy
    [-0.90, 0.00, 0.94, 0.00, 0.10, 1.00, 0.82, 0.00],    # sad
    [0.05, 1.00, 0.80, 0.00, 1.00, 0.15, 1.60, 0.00],     # surprise
    [0.00, 0.00, 1.00, 0.00, 0.00, 0.00, 1.00, 0.00],     # neutral
], dtype=np.float64)
_NEUTRAL = _EXPR[6]
# Noise per parameter, on top of the intensity-scaled expression: sized so that each half of the face
# alone is clearly weaker than the whole face.
_EXPR_NOISE = np.array([0.22, 0.12, 0.06, 0.18, 0.22, 0.28, 0.14, 0.22])

# Canonical face frame: the unit square of an aligned face crop (x right, y down), built around the
# usual 5-point template of aligned 112x112 crops.
_TEMPLATE = np.array([[0.342, 0.462], [0.656, 0.460], [0.500, 0.641], [0.371, 0.825], [0.631, 0.823]])

_SKIN = np.array([[255, 224, 196], [241, 194, 160], [224, 172, 130], [198, 134, 94], [141, 85, 54],
                  [92, 58, 40]], dtype=np.float64)
_HAIR = np.array([[30, 25, 22], [70, 45, 30], [120, 80, 45], [200, 165, 110], [150, 60, 30]],
                 dtype=np.float64)


@dataclass(frozen=True)
class _Face:
    """Everything sampled for one face; rendering is a pure function of it."""

    expression: int
    gender: int
    age: float
    intensity: float
    expr: np.ndarray  # 8 expression parameters
    pose: np.ndarray  # scale, roll (rad), dx, dy
    shape: np.ndarray  # face width, jaw, eye spacing, eye size, mouth width, nose length
    colors: np.ndarray  # background, skin, hair, lips, clothes (5 x 3)
    hair_long: bool
    hairline: float
    beard: float
    earrings: bool
    wrinkle: float  # 0..1, grows with age
    grey: float  # 0..1 hair greyness
    child: float  # 0..1, 1 for babies
    light: np.ndarray  # gradient direction and strength
    seed: int


def _sample_face(rng: np.random.Generator) -> _Face:
    expression = int(rng.integers(len(EXPRESSIONS)))
    gender = int(rng.integers(2))
    age = float(rng.uniform(*AGE_RANGE))
    intensity = 1.0 if expression == 6 else float(rng.uniform(0.5, 1.0))
    expr = _NEUTRAL + intensity * (_EXPR[expression] - _NEUTRAL) + rng.normal(0, _EXPR_NOISE)
    child = float(np.clip((16.0 - age) / 14.0, 0.0, 1.0))
    # How visibly aged the face is: an individual offset makes age a noisy, not exact, function of cues.
    aged = age + rng.normal(0, 6.0)
    wrinkle = float(np.clip((aged - 28.0) / 45.0, 0.0, 1.0))
    grey = float(np.clip((aged - 42.0) / 25.0 + rng.normal(0, 0.1), 0.0, 1.0))
    pose = np.array([rng.uniform(0.95, 1.15), math.radians(rng.uniform(-14, 14)),
                     rng.uniform(-0.05, 0.05), rng.uniform(-0.05, 0.05)])
    male = gender == 0
    shape = np.array([
        rng.normal(1.0 if male else 0.94, 0.04) * (1 - 0.05 * child),  # face width
        rng.normal(1.0 if male else 0.80, 0.08) * (1 - 0.25 * child),  # jaw squareness
        rng.normal(1.0, 0.04),  # eye spacing
        rng.normal(1.0, 0.08) * (1 + 0.35 * child),  # eye size
        rng.normal(1.0, 0.06) * (1 - 0.2 * child),  # mouth width
        rng.normal(1.0, 0.08) * (1 - 0.3 * child),  # nose length
    ])
    skin = _SKIN[rng.integers(len(_SKIN))] + rng.normal(0, 8, 3)
    hair = _HAIR[rng.integers(len(_HAIR))]
    hair = hair * (1 - grey) + np.array([200, 200, 200]) * grey + rng.normal(0, 8, 3)
    lips = skin * 0.75 + np.array([60, 0, 10]) if male else \
        (skin * 0.55 + np.array([110, 10, 30])) if rng.random() < 0.6 else skin * 0.72 + np.array([70, 0, 15])
    bg = rng.uniform(30, 230, 3)
    clothes = rng.uniform(20, 235, 3)
    hair_long = bool(rng.random() < (0.85 if not male else 0.12))
    hairline = float(rng.uniform(0.17, 0.25) + (0.12 * rng.random() if male and aged > 45 else 0.0))
    beard = float(rng.uniform(0.3, 1.0)) if male and age > 17 and rng.random() < 0.3 else 0.0
    earrings = bool(not male and age > 10 and rng.random() < 0.35)
    light = np.array([rng.uniform(0, 2 * math.pi), rng.uniform(0.0, 0.25)])
    return _Face(expression, gender, age, intensity, expr, pose, shape,
                 np.clip(np.stack([bg, skin, hair, lips, clothes]), 0, 255), hair_long, hairline,
                 beard, earrings, wrinkle, grey, child, light, int(rng.integers(2**31)))


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 28,
             a0: float = 0.0, a1: float = 2 * math.pi) -> np.ndarray:
    t = np.linspace(a0, a1, n)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def _quad(p0, p1, ctrl, n: int = 12) -> np.ndarray:
    """Quadratic Bezier from p0 to p1 through control point ctrl."""
    t = np.linspace(0, 1, n)[:, None]
    p0, p1, ctrl = (np.asarray(v, dtype=np.float64) for v in (p0, p1, ctrl))
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * ctrl + t ** 2 * p1


class _Canvas:
    """Draws canonical-frame shapes through the face's similarity transform at supersampled size."""

    def __init__(self, face: _Face, render: int):
        self.render = render
        scale, roll, dx, dy = face.pose
        c, s = math.cos(roll) * scale, math.sin(roll) * scale
        self.m = np.array([[c, -s], [s, c]]) * render
        self.t = (np.array([0.5 + dx, 0.58 + dy]) - np.array([[c, -s], [s, c]]) @ np.array([0.5, 0.58])) * render
        self.unit = scale * render  # pixels per canonical unit, for line widths
        self.img = Image.new("RGB", (render, render), tuple(int(v) for v in face.colors[0]))
        self.draw = ImageDraw.Draw(self.img)

    def xy(self, pts: np.ndarray) -> np.ndarray:
        return np.asarray(pts, dtype=np.float64) @ self.m.T + self.t

    def polygon(self, pts, fill) -> None:
        self.draw.polygon([tuple(p) for p in self.xy(pts)], fill=_rgb(fill))

    def line(self, pts, fill, width: float) -> None:
        w = max(1, int(round(width * self.unit)))
        self.draw.line([tuple(p) for p in self.xy(pts)], fill=_rgb(fill), width=w, joint="curve")


def _rgb(c) -> tuple[int, int, int]:
    c = np.clip(np.asarray(c, dtype=np.float64), 0, 255)
    return int(c[0]), int(c[1]), int(c[2])


def _face_outline(face: _Face) -> np.ndarray:
    width, jaw = face.shape[0], face.shape[1]
    rx, ry, cx, cy = 0.33 * width, 0.42, 0.5, 0.56
    top = _ellipse(cx, cy, rx, ry, 24, math.pi, 2 * math.pi)
    t = np.linspace(0, math.pi, 24)
    # Lower half: between an ellipse and a squarer jaw; older faces sag a little (jowls).
    sq = np.sign(np.cos(t)) * np.abs(np.cos(t)) ** (1.0 / (1.0 + 0.9 * jaw))
    jowl = 1.0 + 0.06 * face.wrinkle * np.sin(t) ** 2
    low = np.stack([cx + rx * sq * jowl, cy + ry * np.sin(t) ** (1.0 + 0.4 * jaw)], axis=1)
    return np.concatenate([low, top])


def _landmarks(face: _Face) -> np.ndarray:
    """Canonical 5 points after shape and expression (mouth corners move with the expression)."""
    lm = _TEMPLATE.copy()
    eye_dx = (lm[1, 0] - lm[0, 0]) / 2 * face.shape[2]
    eye_y = lm[0, 1] + 0.05 * face.child
    lm[0] = [0.5 - eye_dx, eye_y]
    lm[1] = [0.5 + eye_dx, eye_y]
    lm[2] = [0.5, eye_y + (0.18 * face.shape[5])]
    curve, mopen, mwidth, asym = face.expr[:4]
    half = (lm[4, 0] - lm[3, 0]) / 2 * face.shape[4] * mwidth
    mouth_y = lm[2, 1] + 0.185 - 0.03 * face.child
    lm[3] = [0.5 - half, mouth_y - 0.05 * curve]
    lm[4] = [0.5 + half, mouth_y - 0.05 * curve - 0.06 * asym]
    return lm


def _render(face: _Face, size: int) -> tuple[np.ndarray, np.ndarray]:
    render = max(2 * size, 96)
    cv = _Canvas(face, render)
    rng = np.random.default_rng(face.seed)
    bg, skin, hair, lips, clothes = face.colors
    lm = _landmarks(face)
    outline = _face_outline(face)
    width = face.shape[0]
    dark = skin * 0.55

    # Body and hair behind the head.
    cv.polygon([[0.1, 1.2], [0.18, 0.98], [0.38, 0.9], [0.62, 0.9], [0.82, 0.98], [0.9, 1.2]], clothes)
    cv.polygon([[0.42, 0.8], [0.58, 0.8], [0.6, 0.98], [0.4, 0.98]], skin * 0.9)
    if face.hair_long:
        back = _ellipse(0.5, 0.5, 0.39 * width, 0.47, 30, math.pi * 0.95, math.pi * 2.05)
        back = np.concatenate([back, [[0.5 + 0.42 * width, 0.95], [0.5 - 0.42 * width, 0.95]]])
        cv.polygon(back, hair)
    # Ears, then the face.
    for side in (-1, 1):
        cv.polygon(_ellipse(0.5 + side * 0.335 * width, 0.55, 0.04, 0.07, 14), skin * 0.92)
    cv.polygon(outline, skin)
    if face.earrings:
        for side in (-1, 1):
            cv.polygon(_ellipse(0.5 + side * 0.34 * width, 0.64, 0.018, 0.018, 10), [235, 200, 60])
    # Hair on top: fringe down to the hairline.
    top = _ellipse(0.5, 0.56, 0.345 * width, 0.44, 26, math.pi * 1.02, math.pi * 1.98)
    fringe = np.concatenate([top, _quad([0.5 + 0.33 * width, face.hairline + 0.1],
                                        [0.5 - 0.33 * width, face.hairline + 0.1],
                                        [0.5, face.hairline - 0.04])])
    cv.polygon(fringe, hair)

    # Beard and moustache: lower-face gender cue.
    if face.beard > 0:
        tone = skin * (1 - 0.55 * face.beard) + hair * 0.55 * face.beard
        chin = outline[3:21]
        cv.polygon(np.concatenate([chin, [[lm[4, 0] + 0.02, lm[4, 1] + 0.02],
                                          [lm[3, 0] - 0.02, lm[3, 1] + 0.02]]]), tone)
        cv.line(_quad(lm[3] + [0, -0.035], lm[4] + [0, -0.035], [0.5, lm[3, 1] - 0.06]), tone, 0.03)

    # Brows: raise and inner tilt carry expression; thickness carries gender.
    curve, mopen, mwidth, asym, raise_, tilt, eye_open, wrinkle_nose = face.expr
    brow_w = (0.045 if face.gender == 0 else 0.028) * (1 - 0.3 * face.child)
    brow_c = hair * 0.45 + dark * 0.3  # darker than the skin, whatever the hair colour
    eye_w = 0.07 * face.shape[3]
    for k, side in ((0, -1), (1, 1)):
        ex, ey = lm[k]
        base = ey - 0.08 - 0.05 * raise_
        inner = [ex - side * 0.06, base - 0.045 * tilt]
        outer = [ex + side * 0.07, base + 0.008]
        cv.line(_quad(inner, outer, [ex + side * 0.01, base - 0.015]), brow_c, brow_w)
        # Eye: white, iris, lid.
        eh = 0.032 * face.shape[3] * max(eye_open, 0.25)
        cv.polygon(_ellipse(ex, ey, eye_w, eh, 20), [245, 245, 240])
        iris = min(eh, 0.024 * face.shape[3])
        cv.polygon(_ellipse(ex, ey, iris, iris, 14), [40, 30, 25])
        cv.line(_ellipse(ex, ey, eye_w, eh, 14, math.pi, 2 * math.pi), dark, 0.012)
        if face.wrinkle > 0.05:  # crow's feet and eye bags
            for j in (-1, 0, 1):
                cv.line([[ex + side * (eye_w + 0.012), ey + j * 0.014],
                         [ex + side * (eye_w + 0.012 + 0.04 * face.wrinkle), ey + j * 0.024]],
                        skin * (1 - 0.35 * face.wrinkle), 0.008)
            cv.line(_ellipse(ex, ey + 0.018, eye_w * 0.8, 0.02, 10, 0.2, math.pi - 0.2),
                    skin * (1 - 0.3 * face.wrinkle), 0.008)
    # Forehead lines.
    for j in range(int(round(4 * face.wrinkle))):
        y = face.hairline + 0.07 + 0.035 * j
        if y < lm[0, 1] - 0.1:
            cv.line(_quad([0.39, y], [0.61, y], [0.5, y - 0.012]), skin * (1 - 0.3 * face.wrinkle), 0.009)
    # Nose, with disgust wrinkles at the bridge.
    nx, ny = lm[2]
    cv.line([[0.5 - 0.01, lm[0, 1] + 0.02], [nx - 0.02, ny - 0.01]], skin * 0.8, 0.012)
    cv.line(_ellipse(nx, ny, 0.04, 0.018, 10, 0.1, math.pi - 0.1), dark, 0.012)
    if wrinkle_nose > 0.3:
        for j in (-1, 1):
            cv.line([[0.5 + j * 0.015, lm[0, 1] - 0.005], [0.5 + j * 0.035, lm[0, 1] + 0.045]],
                    skin * (1 - 0.45 * min(wrinkle_nose, 1.2)), 0.01)
    # Nasolabial folds: an age cue in the lower face.
    if face.wrinkle > 0.1:
        for k, side in ((3, -1), (4, 1)):
            cv.line(_quad([nx + side * 0.055, ny - 0.01], lm[k] + [side * 0.03, 0.0],
                          [nx + side * 0.085, (ny + lm[k, 1]) / 2]), skin * (1 - 0.35 * face.wrinkle), 0.01)
    # Mouth: the upper lip follows the expression curve; an open mouth shows a dark gap.
    left, right = lm[3], lm[4]
    mid = (left + right) / 2
    half = (right[0] - left[0]) / 2
    upper_mid = mid + [0, 0.035 * curve - 0.004]
    gap = max(mopen, 0.0) * 0.09
    upper = _quad(left, right, upper_mid + [0, 0.01])
    lower = _quad(right, left, upper_mid + [0, 2 * gap + 0.05 + 0.06 * max(curve, 0)])
    cv.polygon(np.concatenate([upper, lower]), lips)
    if gap > 0.006:
        inner_low = _quad(right - [0.15 * half, 0], left + [0.15 * half, 0],
                          upper_mid + [0, 2 * gap + 0.02 + 0.05 * max(curve, 0)])
        cv.polygon(np.concatenate([_quad(left + [0.1 * half, 0.003], right - [0.1 * half, 0.003],
                                         upper_mid + [0, 0.014]), inner_low]), [60, 20, 25])
        if curve > 0.4:  # teeth in a broad smile
            cv.line(_quad(left + [0.25 * half, 0.01], right - [0.25 * half, 0.01], upper_mid + [0, 0.03]),
                    [240, 240, 235], 0.012)
    cv.line(upper, lips * 0.55, 0.012)

    img = cv.img.resize((size, size), Image.BILINEAR, reducing_gap=2.0)
    arr = np.asarray(img, dtype=np.float32)
    # Lighting gradient and sensor noise.
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1) - 0.5
    ang, strength = face.light
    shade = 1.0 + strength * (np.cos(ang) * xx + np.sin(ang) * yy)
    arr = arr * shade[..., None] + rng.normal(0, 4.0, arr.shape)
    points = cv.xy(lm) * (size / render)
    return np.clip(arr, 0, 255).astype(np.uint8), points.astype(np.float32)


def generate(n: int, size: int = 48, channels: int = 3, seed: int = 0, label_noise: float = 0.0,
             progress=None) -> FaceSet:
    """Render ``n`` faces; the same seed gives the same faces (and scaled landmarks) at any size."""
    if size < MIN_SIZE:
        raise UsageError(f"image size {size} is too small for synthfaces: the minimum is {MIN_SIZE} px")
    if channels not in (1, 3):
        raise UsageError(f"channels must be 1 (grey) or 3 (RGB), not {channels}")
    if not 0.0 <= label_noise < 1.0:
        raise UsageError(f"label_noise must be in [0, 1), not {label_noise}")
    rng = np.random.default_rng(seed)
    images = np.empty((n, size, size, channels), dtype=np.uint8)
    landmarks = np.empty((n, 5, 2), dtype=np.float32)
    expression = np.empty(n, dtype=np.int64)
    gender = np.empty(n, dtype=np.int64)
    age = np.empty(n, dtype=np.float32)
    for i in range(n):
        face = _sample_face(rng)
        img, pts = _render(face, size)
        if channels == 1:
            img = (img @ np.array([0.299, 0.587, 0.114])).round().astype(np.uint8)[..., None]
        images[i], landmarks[i] = img, pts
        expression[i], gender[i], age[i] = face.expression, face.gender, face.age
        if progress is not None:
            progress(1)
    if label_noise > 0:
        # Like crowd labels: a share of training faces gets a random class or a wrong age.
        noise_rng = np.random.default_rng([seed, 7919])
        for labels, k in ((expression, len(EXPRESSIONS)), (gender, len(GENDERS))):
            flip = noise_rng.random(n) < label_noise
            labels[flip] = noise_rng.integers(k, size=int(flip.sum()))
        off = noise_rng.random(n) < label_noise
        age[off] = np.clip(age[off] + noise_rng.normal(0, 10.0, int(off.sum())), *AGE_RANGE)
    return FaceSet(images=images, landmarks=landmarks,
                   labels={"expression": expression, "gender": gender, "age": age},
                   classes={"expression": list(EXPRESSIONS), "gender": list(GENDERS)},
                   name="synthfaces")
