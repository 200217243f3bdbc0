"""occlusion-distill: teacher -> student distillation for face models under occlusion."""

from __future__ import annotations

from ._version import __version__  # noqa: E402

from .errors import DataError, OccdistillError, PluginError, UsageError  # noqa: E402
from .registry import create, list_plugins, registry  # noqa: E402

__all__ = ["__version__", "create", "list_plugins", "registry", "OccdistillError", "UsageError",
           "DataError", "PluginError"]
