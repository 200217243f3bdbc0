"""Optional dependencies, imported only by the code that needs them, with the fix in the error."""

from __future__ import annotations

import importlib.util
from types import ModuleType

from .errors import UsageError


def has_faiss() -> bool:
    """Whether ``faiss`` can be imported (found on the path; not imported here)."""
    return importlib.util.find_spec("faiss") is not None


def require_faiss() -> ModuleType:
    """The ``faiss`` module (hard-negative mining), or a one-line error naming the extra to install.

    faiss-cpu and faiss-gpu provide the same module, so they come as two mutually exclusive extras.
    """
    try:
        import faiss
    except ImportError as exc:
        raise UsageError(
            "this needs FAISS, which is not installed: pip install 'occlusion-distill[cpu]' "
            "(faiss-cpu), or 'occlusion-distill[gpu]' (faiss-gpu) on a CUDA machine; never both") from exc
    return faiss
