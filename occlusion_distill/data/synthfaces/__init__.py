"""``synthfaces``: the built-in data set, drawn by a procedural face generator (no download, no licence)."""

from .dataset import SynthFaces
from .generator import EXPRESSIONS, GENDERS, GENERATOR_VERSION, generate

__all__ = ["SynthFaces", "EXPRESSIONS", "GENDERS", "GENERATOR_VERSION", "generate"]
