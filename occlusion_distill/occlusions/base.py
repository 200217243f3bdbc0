"""``Occlusion``: an albumentations DualTransform that places itself by the face's 5 landmarks.

Randomness lives in ``sample`` (drawn from the transform's own seeded ``random_generator``), pixels in
``render`` (a drawn occluder: its box, opacity and colours) or ``coverage`` (a mask-only one), pure
functions of the image size and the sampled parameters. The base class derives both the drawing and
the coverage mask from ``render``, so the two cannot disagree. Keypoints pass through unchanged, so an
occlusion can sit anywhere in an ``A.Compose([...], keypoint_params=...)``.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any, Iterable, Optional, Sequence, Tuple

import albumentations as A
import numpy as np

from ..errors import DataError, UsageError
from ..errors import check_number as _check_number
from . import raster

#: what ``Occlusion.render`` returns: the (y0, y1, x0, x1) box, its (y1 - y0, x1 - x0) uint8 alpha and
#: (y1 - y0, x1 - x0, 3) uint8 RGB layer (None: the ``fill`` colour); (None, None, None) when off the image
Rendered = Tuple[Optional[Tuple[int, int, int, int]], Optional[np.ndarray], Optional[np.ndarray]]


def landmarks_from(keypoints: Any) -> np.ndarray:
    """The first 5 keypoints as a (5, 2) float array (MTCNN order), with a clear error otherwise."""
    if keypoints is None:
        raise DataError("an occlusion needs the face's 5 landmarks: pass keypoints=... (MTCNN order)")
    kps = np.asarray(keypoints, dtype=np.float32)
    if kps.ndim != 2 or kps.shape[0] < 5 or kps.shape[1] < 2:
        raise DataError(f"an occlusion needs 5 landmarks as (x, y) keypoints, got shape {kps.shape} (in A.Compose, "
                        f"set KeypointParams(remove_invisible=False) so that a crop does not drop landmarks)")
    kps = kps[:5, :2]
    if not np.isfinite(kps).all():
        raise DataError("an occlusion needs finite landmarks; got NaN or infinite values")
    if float(np.hypot(*(kps[1] - kps[0]))) < 1e-3:
        raise DataError("the two eye landmarks coincide: an occlusion cannot be placed on this face")
    return kps


def check_fill(fill: Any) -> int | tuple[int, ...]:
    """A fill colour: one 0-255 value, or one per channel."""
    values = fill if isinstance(fill, (list, tuple)) else [fill]
    if not values or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                             and 0 <= v <= 255 for v in values):
        raise UsageError(f"fill must be a 0-255 integer or a tuple of them, not {fill!r}")
    return tuple(int(v) for v in values) if isinstance(fill, (list, tuple)) else int(fill)


def check_fill_mask(fill_mask: Any) -> float | tuple[float, ...] | None:
    """``fill_mask`` as albumentations' dropouts take it: None (leave masks alone), one number, or one per
    mask channel."""
    if fill_mask is None:
        return None
    values = fill_mask if isinstance(fill_mask, (list, tuple)) else [fill_mask]
    if not values or not all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                             and np.isfinite(v) for v in values):
        raise UsageError(f"fill_mask must be None (masks pass unchanged), a number or one per mask channel, "
                         f"not {fill_mask!r}")
    return tuple(values) if isinstance(fill_mask, (list, tuple)) else fill_mask


#: the number check lives in ``errors`` (run options use it too); plugins import it from here
check_number = _check_number


def check_choices(value: Any, choices: Iterable[str], option: str, *, plugin: str, item: str | None = None
                  ) -> list[str]:
    """Names among ``choices``: None (all of them, in order), one name, names separated by commas (as typed
    on the command line) or a list; repeats are kept (a name given twice is drawn twice as often).

    Anything else, an empty list or an unknown name is a one-line ``UsageError`` that lists the choices;
    ``item`` names one of them in it (default: ``option`` without its plural s, "colours" -> "colour").
    """
    choices = list(choices)
    if value is None:
        return choices
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",")]
    listed = ", ".join(choices)
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) for v in value):
        raise UsageError(f"{plugin}: {option} must be names among {listed} (one, a list or comma-separated), "
                         f"not {value!r}")
    bad = [v for v in value if v not in choices]
    if bad:
        raise UsageError(f"{plugin}: unknown {item or option.rstrip('s')} {bad[0]!r} in {option}; choose from "
                         f"{listed}")
    return list(value)


def check_p(p: Any) -> float:
    if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0.0 <= p <= 1.0:
        raise UsageError(f"p (the probability of occluding a face) must be a number in [0, 1], not {p!r}")
    return float(p)


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def fill_for(fill: int | tuple[int, ...], image: np.ndarray) -> np.ndarray:
    """A fill as the image's pixel value: one value everywhere, a colour on RGB, its luminance on grey."""
    values = np.atleast_1d(np.asarray(fill, dtype=np.float64))
    channels = image.shape[2] if image.ndim == 3 else 0
    if values.size == 3 and channels in (0, 1):
        values = np.array([values @ [0.299, 0.587, 0.114]])
    if values.size not in (1, max(channels, 1)):
        raise UsageError(f"fill {fill} has {values.size} values for an image with {channels or 1} channels")
    pixel = np.round(values).astype(image.dtype)
    return pixel if channels else pixel[0]


def check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim not in (2, 3) or \
            (image.ndim == 3 and image.shape[2] not in (1, 3)):
        raise DataError(f"occlusions draw on uint8 grey (H, W) / (H, W, 1) or RGB (H, W, 3) images, got "
                        f"{getattr(image, 'dtype', type(image).__name__)} {getattr(image, 'shape', '')}")


class Occlusion(A.DualTransform):
    """Base class of every occlusion plugin; subclasses write ``sample`` and either ``render`` (a drawn
    occluder) or ``coverage`` (a mask filled with ``fill``).

    ``version`` is part of the run cache key: raise it when a change draws different pixels for the same
    settings and seed, so that models trained on the old drawings are not reused.

    ``fill_mask`` is for a ``mask`` target in ``A.Compose``, as in albumentations' ``CoarseDropout``: None
    (the default) passes the mask through unchanged (it is the caller's, a segmentation say); a value (or
    one per mask channel) is written at the hidden pixels, so ``fill_mask=1`` on an empty mask gives the
    coverage. A subclass takes ``fill_mask`` in its constructor and passes it here.

    Plugins written before ``render`` existed (``coverage`` and their own ``draw``) keep working; one that
    defines ``draw`` without ``render`` gets a ``DeprecationWarning`` when its class is defined.
    """

    version = 1

    #: set per class: ``_renders`` when it writes ``render``; ``_render_once`` when, besides, ``draw`` and
    #: ``coverage`` are the base's, so that one render per face serves both
    _renders = False
    _render_once = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._renders = renders = cls.render is not Occlusion.render
        cls._render_once = renders and cls.draw is Occlusion.draw and cls.coverage is Occlusion.coverage
        # `none` keeps its own draw on purpose: it returns the clean face itself, not a copy
        if "draw" in vars(cls) and not renders and not cls.__module__.startswith("occlusion_distill."):
            # point at the class statement, past albumentations' metaclass (however many frames it takes)
            level, frame = 2, sys._getframe(1)
            while frame is not None and frame.f_globals.get("__name__") != cls.__module__:
                level, frame = level + 1, frame.f_back
            warnings.warn(f"{cls.__module__}.{cls.__qualname__} defines draw() without render(): write render() "
                          f"(the box, alpha and layer) instead, and coverage() and draw() come from it",
                          DeprecationWarning, stacklevel=level if frame is not None else 2)

    def __init__(self, fill: int | Sequence[int] = 0, p: float = 1.0,
                 fill_mask: float | Sequence[float] | None = None):
        super().__init__(p=check_p(p))
        self.fill = check_fill(fill)
        self.fill_mask = check_fill_mask(fill_mask)

    # -- what a plugin writes ----------------------------------------------------------------------
    def sample(self, landmarks: np.ndarray, shape: tuple[int, int]) -> dict[str, Any]:
        """All random and landmark-derived parameters for one face. Use ``self.random_generator``.

        ``landmarks``: (5, 2) float32 (x, y) pixels, MTCNN order; ``shape``: the image's (H, W).
        """
        return {}

    def render(self, shape: tuple[int, int], **params: Any) -> Rendered:
        """The occluder drawn inside its bounding box, for the sampled parameters (optional; drawn occluders).

        ``shape`` is the image's (H, W); ``params`` the dict from ``sample``. Returns ``(box, alpha, layer)``:
        ``box`` = (y0, y1, x0, x1) in pixels, clipped to the image (``raster.bbox``); ``alpha`` a
        (y1 - y0, x1 - x0) uint8 opacity, 0 = untouched, 255 = opaque (every pixel above 0 is hidden);
        ``layer`` a (y1 - y0, x1 - x0, 3) uint8 RGB picture of the occluder, or None for the ``fill`` colour.
        ``(None, None, None)`` when the occluder lies off the image. From it the base class derives
        ``coverage`` (alpha > 0) and ``draw`` (``raster.paint``); grey images get the layer's luminance.
        """
        raise NotImplementedError(f"{type(self).__name__} writes neither render() nor coverage()")

    def coverage(self, shape: tuple[int, int], **params: Any) -> np.ndarray:
        """The (H, W) boolean mask of pixels this occlusion hides, for the sampled parameters.

        Derived from ``render`` when the plugin writes it; a mask-only occlusion writes this instead.
        """
        box, alpha, _ = self.render(shape[:2], **params)
        return raster.full_mask(shape, box, alpha)

    def draw(self, image: np.ndarray, **params: Any) -> np.ndarray:
        """A new image with the occluder painted: from ``render``, else the coverage mask filled with ``fill``."""
        if self._renders:
            return self._paint(image, self.render(image.shape[:2], **params))
        mask = self.coverage(image.shape[:2], **params)
        out = image.copy()
        out[mask] = fill_for(self.fill, out)
        return out

    def _paint(self, image: np.ndarray, rendered: Rendered) -> np.ndarray:
        box, alpha, layer = rendered
        if layer is None and box is not None:
            colour = np.atleast_1d(np.asarray(self.fill, dtype=np.uint8))
            if colour.size not in (1, 3):
                raise UsageError(f"fill {self.fill} needs 1 value or 3 (RGB) for a drawn occluder")
            layer = np.broadcast_to(np.resize(colour, 3), (*alpha.shape, 3))
        return raster.paint(image, box, alpha, layer)

    # -- plain use, without albumentations' machinery ----------------------------------------------
    def occlude(self, image: np.ndarray, landmarks: np.ndarray, seed: int | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
        """Occlude one face (with probability ``p``): returns the new image and the coverage mask.

        With ``seed``, the result depends on (seed, face) alone, whatever was drawn before.
        """
        params = self._face_params(image, landmarks, seed)
        if params is None:
            return image, np.zeros(image.shape[:2], dtype=bool)
        if self._render_once:
            rendered = self.render(image.shape[:2], **params)
            return self._paint(image, rendered), raster.full_mask(image.shape, *rendered[:2])
        return self.draw(image, **params), self.coverage(image.shape[:2], **params)

    def occlude_image(self, image: np.ndarray, landmarks: np.ndarray, seed: int | None = None) -> np.ndarray:
        """``occlude`` without the coverage mask: what training and evaluation need, at less work."""
        params = self._face_params(image, landmarks, seed)
        return image if params is None else self.draw(image, **params)

    def _face_params(self, image: np.ndarray, landmarks: np.ndarray, seed: int | None) -> dict[str, Any] | None:
        """The sampled parameters for one face, or None when the ``p`` draw skips it."""
        check_image(image)
        if seed is not None:
            self.set_random_seed(seed)
        if self.p < 1.0 and self.random_generator.random() >= self.p:
            return None
        return self.sample(landmarks_from(landmarks), image.shape[:2])

    def settings(self) -> dict[str, Any]:
        """The constructor arguments in effect, defaults included (for config.json and cache keys)."""
        names = [n for n in self.get_transform_init_args_names() if n != "strict"]
        return {**{n: _plain(getattr(self, n, None)) for n in sorted(set(names) | {"p"})}, "version": self.version}

    # -- albumentations hooks ----------------------------------------------------------------------
    def __call__(self, *args: Any, force_apply: bool = False, **data: Any) -> Any:
        if "keypoints" not in data and "image" in data:
            raise DataError(f"{type(self).__name__} needs the face's 5 landmarks: call it with "
                            f"keypoints=... (in A.Compose, set keypoint_params)")
        return super().__call__(*args, force_apply=force_apply, **data)

    @property
    def targets_as_params(self) -> list[str]:
        return ["keypoints"]

    # albumentations adds keys of its own (shape, fill, ...) to the params it passes around, so the
    # sampled parameters travel under one key of ours and never clash with them.
    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        shape = tuple(params["shape"][:2])
        sampled = self.sample(landmarks_from(data.get("keypoints")), shape)
        if not self._render_once:
            return {"occlusion": sampled}
        # rendered once here, for the image and a mask target alike
        return {"occlusion": sampled, "rendered": (shape, self.render(shape, **sampled))}

    def apply(self, img: np.ndarray, occlusion: dict[str, Any] | None = None,
              rendered: tuple[tuple[int, int], Rendered] | None = None, **_: Any) -> np.ndarray:
        check_image(img)
        if rendered is not None and rendered[0] == img.shape[:2]:
            return self._paint(img, rendered[1])
        return self.draw(img, **(occlusion or {}))

    def apply_to_mask(self, mask: np.ndarray, occlusion: dict[str, Any] | None = None,
                      rendered: tuple[tuple[int, int], Rendered] | None = None, **_: Any) -> np.ndarray:
        if self.fill_mask is None:
            return mask
        if rendered is not None and rendered[0] == mask.shape[:2]:
            cover = raster.full_mask(mask.shape, *rendered[1][:2])
        else:
            cover = self.coverage(mask.shape[:2], **(occlusion or {}))
        out = mask.copy()
        out[cover] = self.fill_mask
        return out

    def apply_to_keypoints(self, keypoints: np.ndarray, **params: Any) -> np.ndarray:
        return keypoints

    def apply_to_bboxes(self, bboxes: np.ndarray, **params: Any) -> np.ndarray:
        return bboxes

