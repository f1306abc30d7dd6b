"""The decoder attention's keys and values in place: the prompt's cache and the canvas in one buffer a layer.

transformers' decoder attention concatenates each layer's cached prompt keys and values with the
canvas's in every forward (`append_to_cache`): two kernels a layer, sixty a denoising step at the
real 30 layers, each copying the whole prompt's keys or values again, though only the canvas's
change from step to step. Here the prefill, once per dictation, copies each layer's cache into the
front of a buffer with room for the canvas behind it (`open_windows`), and the fused attention
(`fused_attention.py`) writes the canvas's keys and values behind the prompt's in every step and
attends over the buffer: the tensor the concatenation made, without making it.

The buffers hang on the cache's layers, so they live as long as the cache: a shape's graphs keep
theirs, an eager dictation's go with it. Caches filled elsewhere (transformers' `generate()`) have
none, and their attention concatenates as before.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.cache_utils import DynamicCache


def wanted(backbone: nn.Module) -> bool:
    """Whether the decoder's attention reads windows (`fused_attention.fuse_attention` sets it)."""
    return getattr(backbone.model.decoder, "reads_kv_windows", False)


def open_windows(cache: DynamicCache, canvas_length: int) -> None:
    """Give each of `cache`'s layers a window: its keys and values, then room for `canvas_length` more."""
    for layer in cache.layers:
        keys, values = layer.keys, layer.values
        shape = (*keys.shape[:2], keys.shape[2] + canvas_length, keys.shape[3])
        key_window = torch.empty(shape, dtype=keys.dtype, device=keys.device)
        value_window = torch.empty(shape, dtype=values.dtype, device=values.device)
        key_window[:, :, : keys.shape[2]].copy_(keys)
        value_window[:, :, : values.shape[2]].copy_(values)
        layer.kv_window = key_window, value_window, keys.shape[2]


def window(cache: DynamicCache | None, layer_idx: int, canvas_length: int) -> tuple[torch.Tensor, torch.Tensor, int] | None:
    """(keys, values, cached length) of layer `layer_idx`'s window, if it has one made for this cache
    as it is now and for `canvas_length` tokens."""
    layer = cache.layers[layer_idx] if cache is not None and layer_idx < len(cache.layers) else None
    found = getattr(layer, "kv_window", None)
    if found is None:
        return None
    keys, values, cached = found
    if cached != layer.keys.shape[2] or keys.shape[2] != cached + canvas_length:
        return None
    return found
