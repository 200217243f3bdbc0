"""Paired views: each face as the teacher sees it (clean) and as the student sees it (occluded)."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from ..occlusions.base import Occlusion
from .augment import FaceAugment
from .faceset import FaceSet

_SWAP = [1, 0, 2, 4, 3]  # MTCNN order after a horizontal flip: left and right trade places


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, C) uint8 -> (N, C, H, W) float32 in [0, 1] (pixel / 255).

    Not normalised: ``FaceModel`` applies its backbone's mean and std, so every caller (training views,
    evaluation sets, the teacher table, checks and benchmarks) hands the model the same [0, 1] tensors.
    """
    arr = np.ascontiguousarray(images)
    if not arr.flags.writeable:  # a read-only memory map: torch wants memory it may write
        arr = arr.copy()
    x = torch.from_numpy(arr).permute(0, 3, 1, 2).float()
    return x.div_(255.0)


def hflip(image: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror an (H, W, C) face and its (5, 2) landmarks left to right; left and right points trade places.

    Landmarks are continuous pixel coordinates (pixel ``i`` spans ``[i, i + 1)``, its centre at ``i + 0.5``),
    so x -> W - x keeps each point on the pixel it marked. albumentations puts pixel centres at integers
    and flips x -> W - 1 - x: the same mirror once converted (ours(x) = its(x - 0.5) + 0.5).
    """
    w = image.shape[1]
    lm = landmarks[_SWAP].copy()
    lm[:, 0] = w - lm[:, 0]
    return image[:, ::-1], lm


def occlude_all(faces: FaceSet, occlusion: Occlusion, seed: int) -> np.ndarray:
    """Occlude every face once, deterministically (face i uses seed (seed, i)): evaluation sets."""
    out = np.empty_like(faces.images)
    for i in range(len(faces)):
        out[i] = occlusion.occlude_image(faces.images[i], faces.landmarks[i], seed=face_seed(seed, i, epoch=0))
    return out


def face_seed(seed: int, index: int, epoch: int | None = None) -> int:
    """The uint32 seed of face ``index``'s draw, independent of every other face's (a ``SeedSequence`` child).

    With ``epoch`` (training pairs per epoch; evaluation sets use epoch 0): from ``(seed, epoch, index)``.
    Without (previews, ``bench occlusions`` and the contract checks): from ``(seed, index)``, another
    stream, kept apart so that what each of them shows stays as it was.
    """
    entropy = [seed, index] if epoch is None else [seed, epoch, index]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


class PairedFaces(Dataset):
    """Training pairs: the same face clean and occluded, with the same flip, and its target.

    With ``augment`` the face is also shifted, scaled, rotated and jittered (``FaceAugment``) before it
    is occluded at its moved landmarks: both views share the draw. Randomness is drawn per (seed, epoch,
    face), so it is reproducible whatever the order or number of loader workers; call ``set_epoch`` each
    epoch for fresh draws.
    """

    def __init__(self, faces: FaceSet, targets: np.ndarray, occlusion: Occlusion | None,
                 *, flip: bool = False, seed: int = 0, need_clean: bool = True, need_occluded: bool = True,
                 augment: FaceAugment | None = None):
        self.faces = faces
        self.targets = torch.as_tensor(targets)
        self.occlusion = occlusion
        self.flip = flip
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.need_clean = need_clean
        self.need_occluded = need_occluded and occlusion is not None
        #: without augmentation the clean view is a function of (face, flip) alone, so a teacher's outputs
        #: on it can be computed once for both flips instead of at every step
        self.deterministic_clean = augment is None

    def clean_views(self, flipped: bool, batch_size: int = 256):
        """Every face's clean view in batches, all flipped or none: what a cached teacher is run on."""
        for start in range(0, len(self.faces), batch_size):
            images = self.faces.images[start:start + batch_size]
            yield to_tensor(images[:, :, ::-1] if flipped else images)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.faces)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        image, lm = self.faces.images[i], self.faces.landmarks[i]
        rng_seed = face_seed(self.seed, i, self.epoch)
        flipped = self.flip and bool(rng_seed & 1)
        if flipped:
            image, lm = hflip(image, lm)
        if self.augment is not None:  # its own stream: the flip and the occlusion draw stay as without it
            image, lm = self.augment(image, lm, seed=face_seed(rng_seed, i))
        item = {"target": self.targets[i], "index": torch.tensor(i), "flipped": torch.tensor(flipped)}
        if self.need_clean:
            item["clean"] = to_tensor(image[None])[0]
        if self.need_occluded:
            occluded = self.occlusion.occlude_image(np.ascontiguousarray(image), lm, seed=rng_seed >> 1)
            item["occluded"] = to_tensor(occluded[None])[0]
        return item
