"""Learned, budgeted channel compression (Prune-Deprune §3.1)."""

from raysplit.compression.losses import prune_loss, total_loss
from raysplit.compression.module import MASKS, Compressor, Decompressor, compressed_size, mask_from_logits, top_b_indices

__all__ = [
    "MASKS",
    "Compressor",
    "Decompressor",
    "compressed_size",
    "mask_from_logits",
    "prune_loss",
    "top_b_indices",
    "total_loss",
]
