"""Model zoo: every model is a flat list of layers whose boundaries are split points."""

from raysplit.models.registry import MODELS, build_layers, split_model, SplitModel

__all__ = ["MODELS", "build_layers", "split_model", "SplitModel"]
