"""File and digest helpers every layer uses: atomic writes, weights-only loading, digests, the cache folder.

The lowest layer of the package: it imports nothing of the package but its errors, so data preparation,
models, the engine and the protocol can all write files the same way (never half-written: each write
goes to a temporary name beside the target and is renamed into place).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path
from typing import Any, Callable

from .errors import UsageError


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through ``write(tmp)`` and rename into place: readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, obj: Any) -> None:
    """``obj`` as indented JSON (numpy scalars as floats), written atomically."""
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2, default=float) + "\n"))


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` written atomically."""
    import torch  # torch is heavy; the JSON helpers above must not need it

    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def load_weights_only(path: Path, advice: str = "") -> Any:
    """``torch.load`` with ``weights_only=True``: code hidden in a pickle is never run; such a file is refused.

    Raises ``UsageError`` (with ``advice`` appended) for a file that is not weights-only or cannot be read.
    """
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UsageError(f"{path} is not a weights-only file (it needs arbitrary code to unpickle); "
                         f"refusing to load it{advice}") from exc
    except Exception as exc:
        raise UsageError(f"cannot read {path}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc


def key_digest(key: dict[str, Any]) -> str:
    """20 hex digits of the SHA-256 of ``key`` as sorted JSON: the name of a cached file."""
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]


def file_digest(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, in hex, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def default_cache_dir() -> Path:
    """``$OCCDISTILL_CACHE``, else ``$XDG_CACHE_HOME/occlusion-distill``, else ``~/.cache/occlusion-distill``."""
    env = os.environ.get("OCCDISTILL_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "occlusion-distill"


def pack_per_face(kind: str, values: Any) -> dict[str, Any]:
    """A task's (N,) per-face outcomes as a small JSON object for metrics.json and results.jsonl.

    ``kind`` "correct" (bools): ``{"kind", "n", "bits"}``, the bits packed 8 to a byte (``np.packbits``)
    in base64, about N / 6 characters. Any other kind (floats, e.g. "abs_error"): ``{"kind", "n",
    "float32_zlib"}``, little-endian float32 compressed with zlib, in base64. ``unpack_per_face`` reverses it.
    """
    import base64
    import zlib

    import numpy as np

    arr = np.asarray(values).reshape(-1)
    if kind == "correct":
        data = {"bits": base64.b64encode(np.packbits(arr.astype(bool)).tobytes()).decode("ascii")}
    else:
        raw = zlib.compress(arr.astype("<f4").tobytes(), 9)
        data = {"float32_zlib": base64.b64encode(raw).decode("ascii")}
    return {"kind": kind, "n": int(arr.size), **data}


def unpack_per_face(packed: dict[str, Any]) -> Any:
    """``pack_per_face``'s object -> the (N,) numpy array (bool for "correct", float32 otherwise)."""
    import base64
    import zlib

    import numpy as np

    n = int(packed["n"])
    if "bits" in packed:
        return np.unpackbits(np.frombuffer(base64.b64decode(packed["bits"]), np.uint8), count=n).astype(bool)
    raw = zlib.decompress(base64.b64decode(packed["float32_zlib"]))
    return np.frombuffer(raw, "<f4", count=n).astype(np.float32)
