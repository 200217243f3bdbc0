"""Backbones and the backbone + head face model."""

from .backbones import DEFAULT_BACKBONE
from .network import FaceModel, ModelOutput, build_model, load_weights, read_state_dict

__all__ = ["DEFAULT_BACKBONE", "FaceModel", "ModelOutput", "build_model", "load_weights", "read_state_dict"]
