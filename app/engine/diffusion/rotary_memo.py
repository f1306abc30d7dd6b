"""A prompt's rotary embeddings computed once per dictation, not in every denoising step.

Each decoder forward of transformers' DiffusionGemma computes the cosines and sines of the canvas
positions for each attention type: ten small kernels a type, twenty a step, as many as a whole text
layer launches now (benchmarks/forward_census.py). Every step of a dictation has the same positions.
So a prompt registers its canvas positions here (`pin`, done by `prefill.Prompt`), and the decoder's
rotary embedding (`memoize`) keeps what it computes for a registered tensor as long as that tensor
lives: the graphs of a prompt shape hold their prompt, so the values they read stay theirs, and an
eager dictation's go with its prompt. Tensors not registered (transformers' own `generate()`, which
may reuse its position tensors) are computed as before, as are rope types whose values depend on more
than the positions, and everything inside torch.compile.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.weak import WeakIdKeyDictionary

# rope types whose cos/sin depend on the positions alone (not on a sequence length seen so far)
STATIC_ROPE_TYPES = ("default", "proportional", "linear")
_pinned: WeakIdKeyDictionary = WeakIdKeyDictionary()  # position ids -> {(layer type, dtype, device): (cos, sin)}


def pin(positions: torch.Tensor) -> None:
    """Declare `positions` fixed for as long as it lives (it is never written in place), so the rotary
    embeddings computed for it may be kept with it."""
    _pinned.setdefault(positions, {})


def memoize(rotary: nn.Module) -> None:
    """Make `rotary` (a DiffusionGemmaTextRotaryEmbedding) keep its cos/sin for pinned positions."""
    if getattr(rotary, "memoized", False):
        return
    forward = rotary.forward

    def memoized(x: torch.Tensor, position_ids: torch.Tensor, layer_type: str) -> tuple[torch.Tensor, torch.Tensor]:
        kept = None if torch.compiler.is_compiling() else _pinned.get(position_ids)
        if kept is None or rotary.rope_type.get(layer_type) not in STATIC_ROPE_TYPES:
            return forward(x, position_ids, layer_type)
        key = (layer_type, x.dtype, x.device)
        if key not in kept:
            kept[key] = forward(x, position_ids, layer_type)
        return kept[key]

    rotary.forward = memoized
    rotary.memoized = True
