"""The plugin contract, checked: behind ``occdistill check-plugin``, and for a plugin's own tests.

Occlusions are checked on built-in faces of varied pose: settings() records every option (it keys the
run cache), the input is left untouched, the same seed gives the same output whatever was drawn before,
keypoints are unchanged through ``A.Compose``, shape, dtype and channels are kept on RGB and grey faces
of two sizes, pixels change only inside the reported coverage mask; then two measurements, the share
of each face region hidden and the speed against albumentations' ``CoarseDropout``.

Distillers train one short epoch (a few steps) for a classification and a regression task, from an
untrained teacher on built-in faces, through their own ``train_student``: the student it returns was
trained, the loss terms stay finite, gradients reach the student and never the teacher
(which is left as it was given: weights, eval mode, no hooks), the trained student reloads into
``student_template`` (what the run cache does), and the settings are JSON.
"""

from __future__ import annotations

import copy
import inspect
import json
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np

from .errors import UsageError
from .registry import KINDS, Entry, registry

CHECKED_KINDS = ("occlusions", "distillers")
DISTILLER_TASKS = ("expression", "age")  # one classification and one regression task
# x CoarseDropout at 112 px on one thread: about 400 faces/s where CoarseDropout runs 8,000 (the built-ins
# run at 0.36-0.87x in docs/occlusions-bench.json). A run reads 40-112 px faces at a few hundred per second,
# so a plugin slower than this would be what the training waits for.
DEFAULT_MIN_SPEED = 0.05


class CheckFailed(Exception):
    """One contract point does not hold; the message says where."""


@dataclass
class CheckResult:
    check: str
    passed: bool
    detail: str
    task: str | None = None  # distillers are checked once per task


@dataclass
class PluginReport:
    kind: str
    name: str
    origin: str
    results: list[CheckResult]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "origin": self.origin, "passed": self.passed,
                "results": [asdict(r) for r in self.results]}


class _Checks:
    """Runs contract points one by one: a point that raises fails with the reason, the next still runs."""

    def __init__(self, tick: Callable[[], None] | None = None, task: str | None = None):
        self.results: list[CheckResult] = []
        self.tick = tick
        self.task = task

    def run(self, name: str, fn: Callable[[], str]) -> bool:
        try:
            detail, passed = fn(), True
        except CheckFailed as exc:
            detail, passed = str(exc), False
        except Exception as exc:  # the plugin's own error is the reason
            detail, passed = f"raised {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", False
        self.results.append(CheckResult(name, passed, detail, self.task))
        if self.tick is not None:
            self.tick()
        return passed


def resolve_kind(name: str, kind: str | None = None) -> str:
    """The kind of a plugin name: ``kind`` when given, else the one checked kind that has the name."""
    if kind is not None:
        if kind not in CHECKED_KINDS:
            raise UsageError(f"check-plugin checks {' and '.join(CHECKED_KINDS)}, not {kind}")
        registry(kind).get(name)  # unknown: a one-line error with close names
        return kind
    found = [k for k in CHECKED_KINDS if name in registry(k).names()]
    if len(found) > 1:
        raise UsageError(f"'{name}' is both an occlusion and a distiller: say which with --kind")
    if not found:
        other = [k for k in KINDS if k not in CHECKED_KINDS and name in registry(k).names()]
        if other:
            option = f"--distiller triplet --distiller-arg miner={name}" if other[0] == "miners" else \
                f"--{other[0][:-1]} {name}"
            raise UsageError(f"'{name}' is a {other[0][:-1]}: check-plugin checks occlusions and distillers; "
                             f"try a smoke run instead: occdistill run --preset smoke {option}")
        close = [registry(k).unknown_message(name) for k in CHECKED_KINDS]
        raise UsageError(f"no occlusion or distiller is named '{name}' ({close[0]}; {close[1]}); if it is "
                         f"your plugin: is its package installed in this environment, and reinstalled since "
                         f"its entry points changed?")
    return found[0]


def check_plugin(name: str, kind: str | None = None, options: dict[str, Any] | None = None, *,
                 min_speed: float = DEFAULT_MIN_SPEED, tasks: tuple[str, ...] = DISTILLER_TASKS,
                 seed: int = 0, tick: Callable[[], None] | None = None) -> PluginReport:
    """Check one registered occlusion or distiller against the contract; never raises for a plugin's fault."""
    kind = resolve_kind(name, kind)
    entry = registry(kind).get(name)
    if kind == "occlusions":
        results = check_occlusion(entry, options or {}, min_speed=min_speed, seed=seed, tick=tick)
    else:
        results = check_distiller(entry, options or {}, tasks=tasks, seed=seed, tick=tick)
    return PluginReport(kind, name, entry.origin, results)


def planned_checks(kind: str, tasks: tuple[str, ...] = DISTILLER_TASKS) -> int:
    """How many contract points a check runs (for a progress bar)."""
    return len(OCCLUSION_CHECKS) if kind == "occlusions" else len(DISTILLER_CHECKS) * len(tasks)


# -- occlusions --------------------------------------------------------------------------------------

OCCLUSION_CHECKS = ("builds with these options", "settings record every option", "leaves its input unchanged",
                    "same seed, same output",
                    "keypoints unchanged in A.Compose", "RGB 112 px: shape, dtype kept",
                    "grey 48 px (H, W): shape, dtype kept", "grey 48 px (H, W, 1): shape, dtype kept",
                    "draws only inside its coverage mask", "coverage of each face region",
                    "speed against CoarseDropout")


def _faces(n: int, size: int, seed: int):
    from .bench.occlusions import bench_faces

    return bench_faces(n, size, seed)


def check_occlusion(entry: Entry, options: dict[str, Any], *, min_speed: float = DEFAULT_MIN_SPEED,
                    seed: int = 0, n_faces: int = 24, tick: Callable[[], None] | None = None) -> list[CheckResult]:
    import albumentations as A

    from .bench.occlusions import REFERENCE, coverage, reference_transform, throughput
    from .data.prepared import convert_channels
    from .occlusions.base import Occlusion
    from .occlusions.preview import face_seed
    from .occlusions.regions import REGIONS, region_masks

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
    faces = _faces(n_faces, 112, seed)
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

    small = _faces(8, 48, seed + 1)
    grey48 = convert_channels(small.images, 1)  # (N, 48, 48, 1)
    c.run(OCCLUSION_CHECKS[2], input_unchanged)
    # read-only from here, as memory-mapped prepared faces are: painting on the input fails loudly
    faces.images.flags.writeable = False
    c.run(OCCLUSION_CHECKS[3], same_seed)
    c.run(OCCLUSION_CHECKS[4], keypoints)
    c.run(OCCLUSION_CHECKS[5], keeps_format(faces.images[:8], faces.landmarks[:8]))
    c.run(OCCLUSION_CHECKS[6], keeps_format(grey48[..., 0], small.landmarks))
    c.run(OCCLUSION_CHECKS[7], keeps_format(grey48, small.landmarks))
    c.run(OCCLUSION_CHECKS[8], inside_coverage)
    c.run(OCCLUSION_CHECKS[9], region_coverage)
    c.run(OCCLUSION_CHECKS[10], speed)
    return c.results


# -- distillers --------------------------------------------------------------------------------------

DISTILLER_CHECKS = ("builds, settings are JSON", "trains a few steps", "loss terms finite",
                    "gradients reach the student", "teacher untouched", "student reloads from its state_dict")


class _Recorder:
    """What one training stage did: its loss terms per step, the gradients its student's parameters got."""

    def __init__(self, name: str, distiller: Any, student: Any):
        self.name = name
        self.steps: list[dict[str, float]] = []
        self.bad_output: str | None = None
        self.student = student  # the model the stage was given to train (``ctx.model``)
        self.ctx: Any = None
        self.grads = {n: [] for n, p in student.named_parameters() if p.requires_grad}
        self.handles = [distiller.register_forward_hook(self._on_loss)]
        for n, p in student.named_parameters():
            if p.requires_grad:
                self.handles.append(p.register_hook(self._on_grad(n)))

    def _on_loss(self, module: Any, args: Any, out: Any) -> None:
        import torch

        if not isinstance(out, dict) or "loss" not in out or not isinstance(out["loss"], torch.Tensor) \
                or out["loss"].ndim != 0:
            self.bad_output = f"forward() must return a dict with a scalar tensor under 'loss', got {type(out).__name__}"
            return
        self.steps.append({k: float(v.detach().float()) for k, v in out.items() if isinstance(v, torch.Tensor)
                           and v.numel() == 1})

    def _on_grad(self, name: str) -> Callable[[Any], None]:
        def hook(grad: Any) -> None:
            self.grads[name].append((bool(grad.isfinite().all()), bool(grad.abs().sum() > 0)))
        return hook

    def close(self) -> None:
        for h in self.handles:
            h.remove()


@dataclass
class _World:
    task: Any
    train: Any
    val: Any
    teacher: Any
    probe: Any


def _world(task_name: str, seed: int, image_size: int = 40, n_train: int = 96, n_val: int = 32) -> _World:
    """A few built-in faces, occluded by ``lower-half``, and an untrained teacher: enough for a few steps."""
    import torch

    from .data.paired import PairedFaces, occlude_all, to_tensor
    from .engine.trainer import EvalSet, seed_everything
    from .models.backbones import DEFAULT_BACKBONE
    from .models.network import build_model

    task = registry("tasks").create(task_name)
    data = registry("datasets").create("synthfaces", n_train=n_train, n_val=n_val, n_test=1, seed=seed)
    train_faces = data.load("train", image_size=image_size, channels=3)
    val_faces = data.load("val", image_size=image_size, channels=3)
    task.setup(train_faces)
    occlusion = registry("occlusions").create("lower-half")
    train = PairedFaces(train_faces, task.targets(train_faces), occlusion, flip=True, seed=seed)
    val = EvalSet(to_tensor(occlude_all(val_faces, occlusion, seed)), task.targets(val_faces))
    seed_everything(seed)
    teacher = build_model(DEFAULT_BACKBONE, in_chans=3, image_size=image_size, output_dim=task.output_dim).eval()
    return _World(task, train, val, teacher, val.images[:8].to(torch.float32))


def check_distiller(entry: Entry, options: dict[str, Any], *, tasks: tuple[str, ...] = DISTILLER_TASKS,
                    seed: int = 0, tick: Callable[[], None] | None = None) -> list[CheckResult]:
    return [r for task_name in tasks for r in _check_distiller_on(entry, options, task_name, seed, tick)]


def _check_distiller_on(entry: Entry, options: dict[str, Any], task_name: str, seed: int,
                        tick: Callable[[], None] | None) -> list[CheckResult]:
    import torch

    from .distillers.base import Distiller
    from .engine.trainer import StageContext, TeacherTable, seed_everything

    c = _Checks(tick, task_name)
    names = DISTILLER_CHECKS
    world = _world(task_name, seed)
    device = torch.device("cpu")
    state: dict[str, Any] = {}

    def build() -> str:
        dist, _ = registry("distillers").build(entry.name, task=world.task, **options)
        if not isinstance(dist, Distiller):
            raise CheckFailed(f"builds a {type(dist).__name__}, not an occlusion_distill.distillers.Distiller")
        hparams = dist.hparams()
        try:
            text = json.dumps(hparams, sort_keys=True)
        except TypeError as exc:
            raise CheckFailed(f"hparams() must be JSON (it goes into config.json and cache keys): {exc}") from exc
        state["dist"] = dist
        return f"{type(dist).__name__}{'' if dist.uses_teacher else ' (no teacher)'}: {text}"

    if not c.run(names[0], build):
        c.results += [CheckResult(n, False, "not run: the distiller did not build", task_name) for n in names[1:]]
        return c.results
    dist = state["dist"]
    teacher = world.teacher
    before = {k: v.detach().clone() for k, v in teacher.state_dict().items()}
    recorders: list[_Recorder] = []
    tables: list[TeacherTable] = []
    members: dict[str, Any] = {}

    def teacher_table() -> TeacherTable:
        if not tables:
            tables.append(TeacherTable(teacher, world.train, device))
        return tables[0]

    def train_stage(distiller: Any, stage: str) -> Any:
        student = copy.deepcopy(teacher).requires_grad_(True).train()
        recorder = _Recorder(stage, distiller, student)
        recorders.append(recorder)
        ctx = StageContext(stage=stage, model=student, task=world.task, train=world.train, val=world.val,
                           view="occluded", epochs=1, batch_size=32, lr=1e-3, weight_decay=1e-4, device=device,
                           seed=seed, teacher=teacher, teacher_table=teacher_table, student_for=member)
        recorder.ctx = ctx
        seed_everything(seed + 2)
        try:
            return distiller.train_student(ctx)
        finally:
            recorder.close()

    def member(name: str) -> Any:
        # as in a run: another distiller's student of the same teacher and data (``combined`` asks for them)
        if name not in members:
            other, _ = registry("distillers").build(name, task=world.task)
            members[name] = train_stage(other, f"member {name}")
        return members[name]

    def trains() -> str:
        t0 = time.perf_counter()
        student = train_stage(dist, "student")
        state["teacher left training"] = teacher.training  # before this check puts it in eval mode itself
        if not isinstance(student, torch.nn.Module):
            raise CheckFailed(f"train_student() returned a {type(student).__name__}, not a model")
        student.eval()
        with torch.no_grad():
            out = student(world.probe)
        if not hasattr(out, "logits") or tuple(out.logits.shape) != (len(world.probe), world.task.output_dim):
            raise CheckFailed(f"the trained student must return ModelOutput(logits (B, {world.task.output_dim}), "
                              f"embedding), got {type(out).__name__}")
        if not torch.isfinite(out.logits).all():
            raise CheckFailed("the trained student's outputs are not finite")
        with torch.no_grad():
            untrained = student is teacher or torch.equal(teacher.eval()(world.probe).logits, out.logits)
        if untrained:
            raise CheckFailed("train_student() returned a model with the teacher's outputs: the student it returns "
                              "was never trained")
        state["student"] = student
        return (f"1 epoch of {len(world.train)} built-in faces (40 px, lower-half), untrained teacher: "
                f"{time.perf_counter() - t0:.1f} s")

    def finite() -> str:
        bad = next((r.bad_output for r in recorders if r.bad_output), None)
        if bad:
            raise CheckFailed(bad)
        own = recorders[0] if recorders and recorders[0].name == "student" else None
        parts = []
        for r in ([own] if own else []) + [r for r in recorders if r is not own]:
            if not r.steps:
                continue
            broken = [(i, k, v) for i, s in enumerate(r.steps) for k, v in s.items() if not np.isfinite(v)]
            if broken:
                i, k, v = broken[0]
                raise CheckFailed(f"{r.name}: '{k}' is {v} at step {i + 1}")
            parts.append(f"{r.name}: loss {r.steps[0]['loss']:.3g} -> {r.steps[-1]['loss']:.3g} in {len(r.steps)} steps "
                         f"({', '.join(r.steps[0])})")
        if not parts:
            raise CheckFailed("no loss was computed: forward() was never called during training")
        if own is None or not own.steps:
            parts.insert(0, "no per-step loss of its own")
        return "; ".join(parts)

    def gradients() -> str:
        parts = []
        for r in recorders:
            got = [n for n, seen in r.grads.items() if seen and any(nonzero for _, nonzero in seen)]
            nonfinite = [n for n, seen in r.grads.items() if any(not ok for ok, _ in seen)]
            if nonfinite:
                raise CheckFailed(f"{r.name}: non-finite gradients in {nonfinite[0]}")
            if got:
                parts.append(f"{r.name}: {len(got)} of {len(r.grads)} tensors")
        if not parts:
            raise CheckFailed("no parameter of the student got a non-zero gradient: is the loss detached from "
                              "the student's outputs?")
        if recorders[0].name == "student" and not parts[0].startswith("student"):
            if state.get("student") is recorders[0].student:
                raise CheckFailed("the student it returns got no gradient (only the other students it asked for "
                                  "did): is its loss detached from the student's outputs?")
            parts.insert(0, "student: none, its members: by gradient")
        return "finite, non-zero: " + "; ".join(parts)

    def untouched() -> str:
        with_grad = [n for n, p in teacher.named_parameters() if p.grad is not None and bool(p.grad.abs().sum() > 0)]
        if with_grad:
            raise CheckFailed(f"the teacher got gradients ({len(with_grad)} tensors, e.g. {with_grad[0]}); "
                              f"it is frozen: run it under torch.no_grad()")
        after = teacher.state_dict()
        changed = [k for k, v in before.items() if not torch.equal(v, after[k].detach().cpu())]
        if changed:
            raise CheckFailed(f"the teacher's {changed[0]} changed ({len(changed)} tensors): it must stay frozen, "
                              f"in eval mode (batch-norm statistics included)")
        # later stages of a run share this teacher (and the stage's context): leave them as they were given
        if state.get("teacher left training", teacher.training):
            raise CheckFailed("the teacher was left in training mode; the stages after this one share it")
        hooked = [m for r in recorders for m in (*teacher.modules(), *r.student.modules())
                  if m._forward_hooks or m._forward_pre_hooks or m._backward_hooks]
        if hooked:
            raise CheckFailed(f"hooks were left on a {type(hooked[0]).__name__} of the teacher or student; "
                              f"remove them when the stage ends")
        moved = [r.name for r in recorders if r.ctx is not None and r.ctx.teacher_outputs != "cached"]
        if moved:
            raise CheckFailed(f"{moved[0]}: ctx.teacher_outputs was left changed; restore what the stage was given")
        return f"no gradient; {len(before)} weights and buffers unchanged; eval mode; no hooks left"

    def reloads() -> str:
        if "student" not in state:
            raise CheckFailed("not run: training failed")
        student = state["student"]
        template = dist.student_template(teacher)
        template.load_state_dict(student.state_dict())
        template.eval()
        with torch.no_grad():
            a, b = student(world.probe).logits, template(world.probe).logits
        if not torch.allclose(a, b, atol=1e-5):
            raise CheckFailed("student_template(teacher) with the trained state_dict gives other outputs: a cached "
                              "student would not be the trained one")
        return "student_template(teacher) + its state_dict: same outputs"

    c.run(names[1], trains)
    c.run(names[2], finite)
    c.run(names[3], gradients)
    c.run(names[4], untouched)
    c.run(names[5], reloads)
    return c.results
