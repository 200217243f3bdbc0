"""The run cache: trained teachers (and baselines) stored under a key of everything that made them.

A second run that differs only in the distiller finds the teacher and the baseline here instead of
training them again. Each file carries its key and is rejected when the key does not match.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..errors import UsageError
from ..io import atomic_torch_save, key_digest


class ModelCache:
    def __init__(self, root: str | Path | None, read_only: bool = False):
        self.root = Path(root) if root is not None else None
        if self.root is not None and self.root.exists() and not self.root.is_dir():  # said now, not at the first save
            raise UsageError(f"cache directory {self.root} is a file, not a directory")
        self.read_only = read_only  # torchrun ranks other than 0 read what rank 0 writes

    @property
    def enabled(self) -> bool:
        return self.root is not None

    def _path(self, kind: str, key: dict[str, Any]) -> Path:
        assert self.root is not None
        return self.root / kind / f"{key_digest(key)}.pt"

    def get(self, kind: str, key: dict[str, Any]) -> dict[str, Any] | None:
        """The stored ``{"state_dict", "history"}`` for this key, or None."""
        if self.root is None:
            return None
        path = self._path(kind, key)
        if not path.is_file():
            return None
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            return None  # unreadable or not weights-only: retrain rather than trust it
        if not isinstance(blob, dict) or blob.get("key") != json.dumps(key, sort_keys=True, default=str):
            return None
        return {"state_dict": blob["state_dict"], "history": json.loads(blob.get("history", "[]"))}

    def put(self, kind: str, key: dict[str, Any], state_dict: dict[str, torch.Tensor],
            history: list[dict[str, Any]]) -> Path | None:
        if self.root is None or self.read_only:
            return None
        path = self._path(kind, key)
        atomic_torch_save({"key": json.dumps(key, sort_keys=True, default=str),
                           "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
                           "history": json.dumps(history)}, path)
        return path
