"""The plugins of one run, built from its config: task, occlusion, distiller and data set."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import RunConfig
from ..data.base import FaceDataset
from ..distillers.base import Distiller
from ..errors import PluginError, UsageError
from ..occlusions.base import Occlusion
from ..registry import registry
from ..tasks.base import Task


@dataclass
class Parts:
    """The plugins of one run, built from the config, and where each came from (``origins``: kind ->
    "built-in" or the distribution that registered it; ``backbone`` included)."""

    task: Task
    occlusion: Occlusion
    distiller: Distiller
    dataset: FaceDataset
    origins: dict[str, str]


def build_parts(cfg: RunConfig) -> Parts:
    """Create every plugin of the run; bad names and bad options fail here, before any training.

    Raises ``PluginError`` for an unknown name or a plugin that builds the wrong type, ``UsageError`` for
    bad options or a task whose labels the data set lacks."""
    task, t_entry = registry("tasks").build(cfg.task)
    occlusion, o_entry = registry("occlusions").build(cfg.occlusion, **cfg.occlusion_args)
    distiller, d_entry = registry("distillers").build(cfg.distiller, task=task, **cfg.distiller_args)
    dataset, ds_entry = registry("datasets").build(cfg.dataset, **cfg.dataset_args)
    registry("backbones").get(cfg.backbone)  # unknown backbone: fail now, with suggestions
    for obj, kind, base in ((task, "task", Task), (occlusion, "occlusion", Occlusion),
                            (distiller, "distiller", Distiller), (dataset, "dataset", FaceDataset)):
        if not isinstance(obj, base):
            raise PluginError(f"{kind} plugin '{getattr(cfg, kind)}' must build a {base.__name__}, "
                              f"got {type(obj).__name__}")
    if task.label not in dataset.labels:
        raise UsageError(f"task '{cfg.task}' needs '{task.label}' labels; data set '{cfg.dataset}' "
                         f"has {', '.join(dataset.labels) or 'none'}")
    origins = {"task": t_entry.origin, "occlusion": o_entry.origin, "distiller": d_entry.origin,
               "dataset": ds_entry.origin, "backbone": registry("backbones").get(cfg.backbone).origin}
    return Parts(task, occlusion, distiller, dataset, origins)
