"""The distiller contract, checked by a short training on built-in faces (see ``occlusion_distill.checks``)."""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..registry import Entry, registry

from .base import DISTILLER_TASKS, CheckFailed, CheckResult, _Checks

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

    from ..data.paired import PairedFaces, occlude_all, to_tensor
    from ..engine.stage import EvalSet
    from ..engine.trainer import seed_everything
    from ..models.backbones import DEFAULT_BACKBONE
    from ..models.network import build_model

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
    """The contract points on each of ``tasks`` whose kind (classification, regression) the distiller
    declares in ``task_kinds``; on the others, one point: building it there is a one-line ``UsageError``."""
    from ..distillers.base import TASK_KINDS, task_kind

    kinds = tuple(getattr(entry.obj, "task_kinds", TASK_KINDS))
    results: list[CheckResult] = []
    for task_name in tasks:
        if task_kind(registry("tasks").create(task_name)) in kinds:
            results += _check_distiller_on(entry, options, task_name, seed, tick)
        else:
            results += _check_refuses(entry, options, task_name, kinds, tick)
    return results


def _check_refuses(entry: Entry, options: dict[str, Any], task_name: str, kinds: tuple[str, ...],
                   tick: Callable[[], None] | None) -> list[CheckResult]:
    """A task of a kind the distiller does not declare: building it must fail with one ``UsageError`` line."""
    from ..errors import UsageError

    c = _Checks(tick, task_name)

    def refuses() -> str:
        task = registry("tasks").create(task_name)
        try:
            registry("distillers").build(entry.name, task=task, **options)
        except UsageError as exc:
            return f"declares {', '.join(kinds)} only; '{task_name}' is refused: UsageError: {exc}"
        raise CheckFailed(f"task_kinds is {kinds!r}, yet it builds for '{task_name}' without a UsageError")

    c.run("refuses the task kinds it does not declare", refuses)
    for _ in DISTILLER_CHECKS[1:]:  # the points not run here, for a progress bar counting them all
        if tick is not None:
            tick()
    return c.results


def _check_distiller_on(entry: Entry, options: dict[str, Any], task_name: str, seed: int,
                        tick: Callable[[], None] | None) -> list[CheckResult]:
    import torch

    from ..distillers.base import Distiller
    from ..engine.stage import StageContext, TeacherTable
    from ..engine.trainer import fit, seed_everything

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
                           seed=seed, teacher=teacher, teacher_table=teacher_table, student_for=member,
                           trainer=fit)
        recorder.ctx = ctx
        seed_everything(seed + 2)
        try:
            return distiller.train_student(ctx)
        finally:
            recorder.close()

    def member(name: str, options: dict[str, Any] | None = None) -> Any:
        # as in a run: another distiller's student of the same teacher and data (``combined`` asks for them)
        from ..distillers.base import split_replica

        if name not in members:  # a replica (NAME:K) is trained as NAME is: the check needs its shape only
            other, _ = registry("distillers").build(split_replica(name)[0], task=world.task, **(options or {}))
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
