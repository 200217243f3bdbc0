"""Stage checkpoints: everything needed to continue a stage exactly where it stopped.

A checkpoint holds the model, optimizer, scheduler, AMP scaler, the distiller's state (its projection
and memory bank), the RNG states, the position in the epoch's face order, the best weights so far and
the history. It is written atomically and carries the key of the stage that wrote it: a checkpoint of
another configuration is never resumed from.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UsageError
from ..io import atomic_torch_save, key_digest, load_weights_only


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": json.dumps(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    py = json.loads(state["python"])
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class StageCheckpoint:
    """The checkpoint file of one stage of one run; ``every`` > 0 also saves every that many steps."""

    def __init__(self, path: Path, key: dict[str, Any], every: int = 0, writer: bool = True,
                 discard_stale: bool = False):
        self.path = Path(path)
        self.discard_stale = discard_stale  # another config's state: start the stage afresh instead of refusing
        self.key = key_digest(key)
        self.every = int(every)
        self.writer = writer  # only rank 0 writes under torchrun
        self.saved: dict[str, int] | None = None  # epoch/step of the last save

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None when there is none; a checkpoint of another run is an error."""
        if not self.path.is_file():
            return None
        state = load_weights_only(self.path)
        if not isinstance(state, dict) or state.get("key") != self.key:
            if self.discard_stale:
                return None
            raise UsageError(f"{self.path} was written by another configuration (its key does not match); "
                             f"remove it or start the run again with --overwrite")
        self.saved = {"epoch": state["epoch"], "step": state["step"]}
        return state

    def save(self, state: dict[str, Any]) -> None:
        if self.writer:
            atomic_torch_save({**state, "key": self.key}, self.path)
        self.saved = {"epoch": state["epoch"], "step": state["step"]}

    def describe(self) -> str:
        if self.saved is None:
            return "no checkpoint was saved yet"
        return f"the last checkpoint (epoch {self.saved['epoch'] + 1}, step {self.saved['step']}) is kept in {self.path.parent}"
