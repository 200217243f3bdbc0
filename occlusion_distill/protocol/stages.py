"""The stage cache: where a stage's trained model is found, kept and checkpointed, in one place.

A finished stage is looked up first in this run's own ``checkpoints/resume/`` (so that a resumed run does
not depend on the shared cache, which another run may have cleared), then in the run cache, which later
runs share. A stage in training saves its state to ``checkpoints/resume/<stage>.state.pt``; once finished
it is stored in both places and its state file is dropped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..engine.cache import ModelCache
from ..engine.checkpoint import StageCheckpoint

RESUME_DIR = "resume"  # under a run's checkpoints/: stage states and finished stages, until the run ends


def file_stem(stage: str) -> str:
    """A stage's name as a file name: ``student:kd`` -> ``student-kd``."""
    return stage.replace(":", "-").replace("/", "-")


class StageCache:
    """The run cache and this run's checkpoints, for every stage of one run.

    ``cache``: the run cache (``ModelCache(None)``: none). ``checkpoint_dir``: the run's ``checkpoints/``
    (None: no stage states and no resume, e.g. library use). ``writer``: False on torchrun ranks other
    than 0, which read and never write. ``every``: also save a stage's state every that many steps.
    ``discard_stale``: a state file of another configuration starts the stage afresh instead of failing.
    """

    def __init__(self, cache: ModelCache, checkpoint_dir: Path | None = None, *, writer: bool = True,
                 every: int = 0, discard_stale: bool = False):
        self.cache = cache
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.writer, self.every, self.discard_stale = writer, every, discard_stale
        self.finished = ModelCache(self.checkpoint_dir / RESUME_DIR if self.checkpoint_dir is not None else None,
                                   read_only=not writer)

    def get(self, stage: str, kind: str, key: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
        """A finished stage's ``{"state_dict", "history"}`` and where it was found, or (None, "")."""
        hit = self.finished.get(file_stem(stage), key)
        if hit is not None:
            return hit, "this run's checkpoints (finished before an interruption)"
        hit = self.cache.get(kind, key)
        return (hit, "the run cache") if hit is not None else (None, "")

    def put(self, stage: str, kind: str, key: dict[str, Any], state_dict: dict[str, torch.Tensor],
            history: list[dict[str, Any]]) -> None:
        """Keep a finished stage in the run cache (under ``kind``) and in this run's checkpoints."""
        self.cache.put(kind, key, state_dict, history)
        self.finished.put(file_stem(stage), key, state_dict, history)
        if self.checkpoint_dir is not None and self.writer:  # superseded by the finished stage
            self.state_path(stage).unlink(missing_ok=True)

    def state_path(self, stage: str) -> Path:
        assert self.checkpoint_dir is not None
        return self.checkpoint_dir / RESUME_DIR / f"{file_stem(stage)}.state.pt"

    def checkpoint(self, stage: str, key: dict[str, Any]) -> StageCheckpoint | None:
        """Where a stage in training saves and resumes its state; None without a checkpoint directory."""
        if self.checkpoint_dir is None:
            return None
        return StageCheckpoint(self.state_path(stage), key, every=self.every, writer=self.writer,
                               discard_stale=self.discard_stale)

    def get_outputs(self, key: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor] | None:
        """A teacher's stored outputs on the training faces: (2, N, K) logits, (2, N, D) embeddings."""
        hit = self.cache.get("teacher-outputs", key)
        return None if hit is None else (hit["state_dict"]["logits"], hit["state_dict"]["embeddings"])

    def put_outputs(self, key: dict[str, Any], logits: torch.Tensor, embeddings: torch.Tensor) -> None:
        self.cache.put("teacher-outputs", key, {"logits": logits, "embeddings": embeddings}, [])
