"""Training augmentation of a face and its landmarks: a random affine and a brightness / contrast jitter.

A training pair is one face seen clean and occluded. ``PairedFaces`` augments the clean face first and
occludes the augmented face at its moved landmarks, so both views share every draw (the "consistent"
views of Beyer et al., "Knowledge distillation: a good teacher is patient and consistent", CVPR 2022)
and the occluder stays on the face. The transforms are albumentations' ``Affine`` and
``RandomBrightnessContrast``; this module only fixes their ranges and seeds them per face.
"""

from __future__ import annotations

import numpy as np

from ..config import AUGMENT_DEFAULTS as DEFAULTS
from ..config import resolve_augment

class FaceAugment:
    """Random affine (shift, isotropic scale, rotation about the centre) and brightness / contrast jitter.

    ``translate``: the largest shift, as a fraction of the image's width and height; ``scale``: the
    largest relative size change (0.1: 0.9 to 1.1); ``rotate``: the largest roll in degrees;
    ``brightness`` and ``contrast``: albumentations' limits (0.2: up to 20%). Pixels shifted in from
    outside repeat the border (a constant would draw an edge a model can learn; a reflection would
    mirror the face and its landmarks).

    ``__call__(image, landmarks, seed)``: an (H, W, C) uint8 face and its (5, 2) landmarks in pixel
    coordinates (a pixel spans ``[i, i + 1)``) -> the augmented face (same shape and dtype) and its moved
    landmarks (float64). The same ``seed`` gives the same draw; landmarks may leave the image.
    """

    def __init__(self, translate: float = DEFAULTS["translate"], scale: float = DEFAULTS["scale"],
                 rotate: float = DEFAULTS["rotate"], brightness: float = DEFAULTS["brightness"],
                 contrast: float = DEFAULTS["contrast"]):
        import albumentations as A
        import cv2

        self.settings = resolve_augment({"translate": translate, "scale": scale, "rotate": rotate,
                                         "brightness": brightness, "contrast": contrast})
        s = self.settings
        self.compose = A.Compose(
            [A.Affine(translate_percent=(-s["translate"], s["translate"]), scale=(1 - s["scale"], 1 + s["scale"]),
                      rotate=(-s["rotate"], s["rotate"]), keep_ratio=True, border_mode=cv2.BORDER_REPLICATE, p=1.0),
             A.RandomBrightnessContrast(brightness_limit=s["brightness"], contrast_limit=s["contrast"], p=1.0)],
            keypoint_params=A.KeypointParams(format="xy", remove_invisible=False), p=1.0, strict=True)

    def __call__(self, image: np.ndarray, landmarks: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        self.compose.set_random_seed(seed)
        # albumentations puts pixel centres at integers, this toolkit at +0.5 (see ``paired.hflip``)
        out = self.compose(image=np.ascontiguousarray(image), keypoints=np.asarray(landmarks, np.float64) - 0.5)
        moved = np.asarray(out["keypoints"], dtype=np.float64)[:, :2] + 0.5
        return out["image"].reshape(image.shape), moved

    def __repr__(self) -> str:
        return f"FaceAugment({', '.join(f'{k}={v:g}' for k, v in self.settings.items())})"
