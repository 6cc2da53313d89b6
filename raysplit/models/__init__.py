"""Model zoo: every model is a flat list of layers whose boundaries are split points."""

from raysplit.models.cuts import CutModel, cut_model
from raysplit.models.registry import MODELS, ModelSpec, build_layers, get_model

__all__ = ["MODELS", "CutModel", "ModelSpec", "build_layers", "cut_model", "get_model"]
