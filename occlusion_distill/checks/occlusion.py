"""The occlusion contract, checked on built-in faces of varied pose (see ``occlusion_distill.checks``)."""

from __future__ import annotations

import inspect
from typing import Any, Callable

import numpy as np

from ..registry import Entry, registry

from .base import CheckFailed, CheckResult, DEFAULT_MIN_SPEED, _Checks

OCCLUSION_CHECKS = ("builds with these options", "settings record every option", "leaves its input unchanged",
                    "same seed, same output",
                    "keypoints unchanged in A.Compose", "RGB 112 px: shape, dtype kept",
                    "grey 48 px (H, W): shape, dtype kept", "grey 48 px (H, W, 1): shape, dtype kept",
                    "RGB and grey 32 px: shape, dtype kept",
                    "draws only inside its coverage mask", "coverage of each face region",
                    "speed against CoarseDropout")


def check_occlusion(entry: Entry, options: dict[str, Any], *, min_speed: float = DEFAULT_MIN_SPEED,
                    seed: int = 0, n_faces: int = 24, tick: Callable[[], None] | None = None) -> list[CheckResult]:
    import albumentations as A

    from ..bench.occlusions import REFERENCE, coverage, reference_transform, throughput
    from ..data.paired import face_seed
    from ..data.pose import bench_faces
    from ..data.prepared import convert_channels
    from ..occlusions.base import Occlusion
    from ..occlusions.regions import REGIONS, region_masks

    c = _Checks(tick)
    built: dict[str, Any] = {}

    def build() -> str:
        obj, _ = registry("occlusions").build(entry.name, **options)
        if not isinstance(obj, Occlusion):
            raise CheckFailed(f"builds a {type(obj).__name__}, not an occlusion_distill.occlusions.Occlusion")
        built["occ"] = obj
        settings = " ".join(f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}"
                            for k, v in sorted(obj.settings().items()))
        return f"{type(obj).__name__}: {settings}"

    if not c.run(OCCLUSION_CHECKS[0], build):
        c.results += [CheckResult(name, False, "not run: the occlusion did not build")
                      for name in OCCLUSION_CHECKS[1:]]
        return c.results
    occ = built["occ"]

    def settings_complete() -> str:
        # settings() is what config.json shows and what the run cache keys on: an option it misses or
        # reads as None would let a run reuse students trained with another value of it
        settings = occ.settings()
        params = [p for p in inspect.signature(type(occ).__init__).parameters.values()
                  if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        missing = [p.name for p in params if p.name not in settings]
        if missing:
            raise CheckFailed(f"settings() lacks {', '.join(repr(m) for m in missing)}: list every option in "
                              f"get_transform_init_args_names() and store it as self.<name>; the run cache keys "
                              f"on settings(), so runs with other values would reuse the wrong models")
        lost = [p.name for p in params if settings[p.name] is None and
                (p.default is not None or options.get(p.name) is not None)]
        if lost:
            raise CheckFailed(f"settings() reads {', '.join(repr(m) for m in lost)} as None: store each option "
                              f"as self.<name> (settings() reads the attribute of that name); the run cache keys "
                              f"on settings(), so runs with other values would reuse the wrong models")
        return f"{len(params)} options, all in settings() (config.json and the run cache key)"

    c.run(OCCLUSION_CHECKS[1], settings_complete)
    faces = bench_faces(n_faces, 112, seed)
    seeds = [face_seed(seed, i) for i in range(n_faces)]

    def same_seed() -> str:
        first = [occ.occlude(faces.images[i], faces.landmarks[i], seed=seeds[i]) for i in range(n_faces)]
        varied = 0
        for i in reversed(range(n_faces)):  # other faces drawn in between, in another order
            again = occ.occlude(faces.images[i], faces.landmarks[i], seed=seeds[i])
            for what, a, b in (("image", first[i][0], again[0]), ("coverage mask", first[i][1], again[1])):
                if a.shape != b.shape or not np.array_equal(a, b):
                    raise CheckFailed(f"face {i}: two calls with seed {seeds[i]} give different {what}s; draw all "
                                      f"randomness in sample() from self.random_generator")
            image_only = occ.occlude_image(faces.images[i], faces.landmarks[i], seed=seeds[i])
            if not np.array_equal(image_only, first[i][0]):
                raise CheckFailed(f"face {i}: occlude_image() differs from occlude() for the same seed")
            other = occ.occlude(faces.images[i], faces.landmarks[i], seed=seeds[i] + 1)[0]
            varied += not np.array_equal(other, first[i][0])
        return f"{n_faces} faces drawn twice, in another order; another seed changes {varied} of them"

    def input_unchanged() -> str:
        for i in range(n_faces):
            image = faces.images[i].copy()
            image.flags.writeable = True
            landmarks = faces.landmarks[i].copy()
            occ.occlude(image, landmarks, seed=seeds[i])
            if not np.array_equal(image, faces.images[i]):
                raise CheckFailed(f"face {i}: the input image was modified in place; draw on a copy")
            if not np.array_equal(landmarks, faces.landmarks[i]):
                raise CheckFailed(f"face {i}: the landmarks passed in were modified")
        return f"{n_faces} faces: image and landmarks as they were"

    def keypoints() -> str:
        pipeline = A.Compose([occ], keypoint_params=A.KeypointParams(format="xy", remove_invisible=False),
                             seed=seed)
        worst = 0.0
        for i in range(n_faces):
            out = pipeline(image=faces.images[i], keypoints=faces.landmarks[i],
                           mask=np.zeros(faces.images.shape[1:3], np.uint8))
            kps = np.asarray(out["keypoints"], dtype=np.float64)[:, :2]
            if kps.shape != faces.landmarks[i].shape:
                raise CheckFailed(f"face {i}: {len(faces.landmarks[i])} keypoints went in, {len(kps)} came out")
            worst = max(worst, float(np.abs(kps - faces.landmarks[i]).max()))
            if worst > 1e-4:
                raise CheckFailed(f"face {i}: keypoints moved by up to {worst:.3g} px; an occlusion hides pixels "
                                  f"and leaves the landmarks where they are")
        return f"{n_faces} faces: no keypoint moved"

    def keeps_format(images: np.ndarray, landmarks: np.ndarray) -> Callable[[], str]:
        def check() -> str:
            for i in range(len(images)):
                out, hidden = occ.occlude(images[i], landmarks[i], seed=seeds[i % n_faces])
                if not isinstance(out, np.ndarray) or out.dtype != np.uint8 or out.shape != images[i].shape:
                    raise CheckFailed(f"face {i}: in {images[i].dtype} {images[i].shape}, out "
                                      f"{getattr(out, 'dtype', type(out).__name__)} {getattr(out, 'shape', '')}")
                if not isinstance(hidden, np.ndarray) or hidden.dtype != bool or hidden.shape != images[i].shape[:2]:
                    raise CheckFailed(f"face {i}: the coverage mask must be a bool {images[i].shape[:2]} array, got "
                                      f"{getattr(hidden, 'dtype', type(hidden).__name__)} {getattr(hidden, 'shape', '')}")
            return f"{len(images)} faces: {images[0].dtype} {images[0].shape} image, bool mask"
        return check

    def keeps_formats(sets: list[np.ndarray], landmarks: np.ndarray) -> Callable[[], str]:
        checks = [keeps_format(images, landmarks) for images in sets]
        return lambda: " · ".join(check() for check in checks)

    def inside_coverage() -> str:
        changed_total = 0
        for i in range(n_faces):
            out, hidden = occ.occlude(faces.images[i], faces.landmarks[i], seed=seeds[i])
            changed = np.any(np.atleast_3d(out) != np.atleast_3d(faces.images[i]), axis=-1)
            stray = int(np.count_nonzero(changed & ~hidden))
            if stray:
                raise CheckFailed(f"face {i}: {stray} changed pixels lie outside the coverage mask; coverage() must "
                                  f"report every pixel draw() touches")
            changed_total += int(np.count_nonzero(changed))
        return f"{n_faces} faces: all {changed_total:,} changed pixels inside the mask"

    def region_coverage() -> str:
        regions = [region_masks(faces.landmarks[i], faces.images.shape[1:3]) for i in range(n_faces)]
        shares = coverage(occ, faces, regions, seed)
        return " · ".join(f"{r} {'-' if shares[r] is None else f'{100 * shares[r]:.0f}%'}" for r in REGIONS) \
            + f" hidden ({n_faces} faces)"

    def speed() -> str:
        speed_faces = faces.subset(np.arange(min(16, n_faces)))
        rates = throughput({REFERENCE: reference_transform(), entry.name: occ}, speed_faces, calls=60, rounds=3)
        ratio = rates[entry.name] / rates[REFERENCE]
        text = f"{rates[entry.name]:,.0f} images/s = {ratio:.2f}x CoarseDropout ({rates[REFERENCE]:,.0f}/s), one thread"
        if ratio < min_speed:
            raise CheckFailed(f"{text}: below the {min_speed:g}x minimum, it would slow training down")
        return text + f"; minimum {min_speed:g}x"

    small = bench_faces(8, 48, seed + 1)
    grey48 = convert_channels(small.images, 1)  # (N, 48, 48, 1)
    tiny = bench_faces(8, 32, seed + 2)  # the smallest size the package supports
    c.run(OCCLUSION_CHECKS[2], input_unchanged)
    # read-only from here, as memory-mapped prepared faces are: painting on the input fails loudly
    faces.images.flags.writeable = False
    c.run(OCCLUSION_CHECKS[3], same_seed)
    c.run(OCCLUSION_CHECKS[4], keypoints)
    c.run(OCCLUSION_CHECKS[5], keeps_format(faces.images[:8], faces.landmarks[:8]))
    c.run(OCCLUSION_CHECKS[6], keeps_format(grey48[..., 0], small.landmarks))
    c.run(OCCLUSION_CHECKS[7], keeps_format(grey48, small.landmarks))
    c.run(OCCLUSION_CHECKS[8], keeps_formats([tiny.images, convert_channels(tiny.images, 1)], tiny.landmarks))
    c.run(OCCLUSION_CHECKS[9], inside_coverage)
    c.run(OCCLUSION_CHECKS[10], region_coverage)
    c.run(OCCLUSION_CHECKS[11], speed)
    return c.results


# -- distillers --------------------------------------------------------------------------------------
