"""Linears that read the same input, stacked into one product.

At a dictation's 256 rows a text layer's projections are small matrix products, each a kernel of its
own and too small to fill an H100's 132 SMs: the dense MLP's gate and up (2 x 2112 outputs), and the
decoder attention's query, key and value (4096 + 2048 + 2048). Stacking each group's weights along
the outputs makes one product of them (`fused_mlp.py`, `fused_attention.py`). One product of more
outputs may add in another order than the separate ones where cuBLAS picks its kernel by shape (bf16,
fp8): the same to bf16 rounding, not bit for bit; the Triton kernel of int8/int4 computes each tile alike.

Weights shared with layers that keep their separate products (the encoder's, tied to the decoder's
and perhaps under a LoRA) are re-pointed at their rows of the stacked weight (`share_rows`), so the
model holds each weight once.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from app.engine.diffusion.quantization import QuantizedLinear


def stack_linears(parts: Sequence[nn.Module]) -> nn.Module | None:
    """One linear computing each part's outputs in turn, or None unless all are plain bias-free
    linears of one dtype (`nn.Linear`) or quantized ones of one mode (`QuantizedLinear`)."""
    if all(type(part) is nn.Linear and part.bias is None for part in parts) \
            and len({(part.weight.dtype, part.in_features) for part in parts}) == 1:
        stacked = nn.Linear(parts[0].in_features, sum(part.out_features for part in parts), bias=False, device="meta")
        stacked.weight = nn.Parameter(torch.cat([part.weight.data for part in parts]), requires_grad=False)
        return stacked
    if all(type(part) is QuantizedLinear for part in parts):
        try:
            return QuantizedLinear.stacked(*parts)
        except ValueError:
            return None
    return None


def share_rows(model: nn.Module, parts: Sequence[nn.Module], stacked: nn.Module) -> None:
    """Make every linear of `model` that holds one of `parts`' weights (a part itself, or a tied
    twin) read it from its rows of `stacked`'s weight, so the weight is not held twice."""
    start, views = 0, {}
    for part in parts:
        stop = start + part.out_features
        if isinstance(stacked, QuantizedLinear):
            q = stacked.qweight
            views[part.qweight.codes.data_ptr()] = q.codes[start:stop], q.scale[start:stop]
        else:
            views[part.weight.data_ptr()] = stacked.weight.data[start:stop]
        start = stop
    for module in model.modules():
        if type(module) is QuantizedLinear and module.qweight.codes.data_ptr() in views:
            module.qweight.codes, module.qweight.scale = views[module.qweight.codes.data_ptr()]
        elif type(module) is nn.Linear and module.weight.data_ptr() in views:
            module.weight.data = views[module.weight.data_ptr()]
