"""DiffusionGemma's attention with its query, key and value heads prepared by one Triton kernel on CUDA GPUs.

Between its projections and the attention itself, transformers' DiffusionGemma attention runs a
norm and the rotary embedding on the query heads, the same on the key heads, and an unscaled norm on
the value heads: with the fused RMSNorm (`fused_norm.py`) and transformers' five-kernel rotary
embedding thirteen kernels a layer (five with the rotary kernel this replaced), ~390 a forward at the
real 30 layers (benchmarks/forward_census.py counts them). `heads` does it all in one launch, a
program a head of a token:

- query and key heads: the norm (the fused RMSNorm's formula and launch, so its sum of squares
  adds in the same order), rounded to the dtype, then the rotary embedding with transformers'
  roundings (each product, then their sum); a head's partner half is normalized with the same root
  mean square, so it is the value the norm would have stored;
- value heads: the norm without a scale; in full-attention layers, whose keys are their values,
  of the keys before their norm, as transformers takes them.

So the results are those of the fused norm and transformers' rotary embedding bit for bit by design
(the CPU tests under Triton's interpreter in float32; benchmarks/gpu_fused_check.py in bf16 on a GPU).
`fused_attention_forward` is transformers' attention forward (encoder and decoder: they differ in how
they use the cache) with this kernel in place of those thirteen; it takes transformers' own path inside
torch.compile (which fuses them itself) and for head sizes that are not a power of two. The decoder's
query, key and value projections, which every denoising step runs, are one product
(`stack_projections`, `stacking.py`: two kernels fewer in its sliding layers, one in the others), whose
columns the kernel reads in place.
"""

from __future__ import annotations

import types
from typing import Callable

import torch
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.diffusion_gemma import modeling_diffusion_gemma
from transformers.models.diffusion_gemma.modeling_diffusion_gemma import (
    DiffusionGemmaDecoderTextAttention,
    DiffusionGemmaEncoderTextAttention,
)

from app.engine.diffusion import expert_kernels, fused_norm, kv_windows
from app.engine.diffusion.stacking import share_rows, stack_linears

triton, tl = expert_kernels.triton, getattr(expert_kernels, "tl", None)
ATTENTIONS = (DiffusionGemmaDecoderTextAttention, DiffusionGemmaEncoderTextAttention)
HEAD_WARPS = 4  # as the fused RMSNorm launches: the same reduction layout, so the same sums of squares

if triton is not None:
    root_mean_square = fused_norm.root_mean_square

    @triton.jit
    def _norm_rope(src, weight_ptr, cos_ptr, sin_ptr, dst, eps, DIM: tl.constexpr):
        """One query or key head: normed, rounded, rotated."""
        cols = tl.arange(0, DIM)
        partner = (cols + DIM // 2) % DIM
        dtype = dst.dtype.element_ty
        x = tl.load(src + cols).to(tl.float32)
        rms = root_mean_square(x, eps, DIM)
        normed = ((x / rms) * tl.load(weight_ptr + cols).to(tl.float32)).to(dtype).to(tl.float32)
        other = ((tl.load(src + partner).to(tl.float32) / rms) * tl.load(weight_ptr + partner).to(tl.float32)).to(dtype).to(tl.float32)
        rotated = tl.where(cols < DIM // 2, -other, other)
        cos = tl.load(cos_ptr + cols).to(tl.float32)
        sin = tl.load(sin_ptr + cols).to(tl.float32)
        out = (normed * cos).to(dtype).to(tl.float32) + (rotated * sin).to(dtype).to(tl.float32)
        tl.store(dst + cols, out.to(dtype))

    @triton.jit
    def _heads_kernel(q_ptr, k_ptr, v_ptr, q_weight, k_weight, cos_ptr, sin_ptr, q_out, k_out, v_out, eps, angles, tokens,
                      q_stride, k_stride, v_stride, q_batch, q_token, q_head, k_batch, k_token, k_head, v_batch, v_token, v_head,
                      HQ: tl.constexpr, HK: tl.constexpr, HV: tl.constexpr, DIM: tl.constexpr):
        """Inputs: a token's heads one after another, tokens `*_stride` apart (the columns of one
        stacked projection, or a projection of their own). Outputs: element (batch row, token, head)
        at `*_batch`, `*_token` and `*_head` strides (contiguous, or keys and values behind the
        prompt's in their windows, `kv_windows.py`); `tokens`: a batch row's."""
        program = tl.program_id(0).to(tl.int64)
        token, head = program // (HQ + HK + HV), program % (HQ + HK + HV)
        row, at = token // tokens, token % tokens
        angle = (token % angles) * DIM  # cos/sin rows: one a token, or one a position shared by the batch
        if head < HQ:
            _norm_rope(q_ptr + token * q_stride + head * DIM, q_weight, cos_ptr + angle, sin_ptr + angle,
                       q_out + row * q_batch + at * q_token + head * q_head, eps, DIM)
        elif head < HQ + HK:
            _norm_rope(k_ptr + token * k_stride + (head - HQ) * DIM, k_weight, cos_ptr + angle, sin_ptr + angle,
                       k_out + row * k_batch + at * k_token + (head - HQ) * k_head, eps, DIM)
        else:
            cols = tl.arange(0, DIM)
            x = tl.load(v_ptr + token * v_stride + (head - HQ - HK) * DIM + cols).to(tl.float32)
            tl.store(v_out + row * v_batch + at * v_token + (head - HQ - HK) * v_head + cols,
                     (x / root_mean_square(x, eps, DIM)).to(v_out.dtype.element_ty))


def heads(attention: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, cos: torch.Tensor,
          sin: torch.Tensor, *, key_out: torch.Tensor | None = None,
          value_out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(query, key, value) as transformers' attention has them before it transposes them, (batch,
    tokens, heads, dim): its norms and rotary embedding applied. Inputs with each token's heads
    contiguous (a projection's output, or its columns of a stacked one), cos/sin (batch or 1, tokens,
    dim) contiguous; `value` may be `key` itself (full attention: the keys before their norm).
    Outputs are new contiguous tensors, or for the keys and values `key_out`/`value_out` (any strides,
    shaped as the inputs: a window's canvas part, transposed)."""
    inputs = (query, key, value)
    if any(t.stride(-1) != 1 or t.stride(-2) != t.shape[-1] or t.stride(0) != t.shape[1] * t.stride(1) for t in inputs):
        raise ValueError("heads wants each token's heads contiguous")
    outs = tuple(torch.empty(t.shape, dtype=t.dtype, device=t.device) if out is None else out
                 for t, out in zip(inputs, (None, key_out, value_out)))
    if any(out.shape != t.shape or out.stride(-1) != 1 for t, out in zip(inputs, outs)):
        raise ValueError("heads writes each head's values contiguous, in tensors shaped as its inputs")
    batch, tokens, dim = query.shape[0], query.shape[1], query.shape[-1]
    hq, hk, hv = (t.shape[-2] for t in inputs)
    _heads_kernel[(batch * tokens * (hq + hk + hv),)](
        *inputs, attention.q_norm.weight, attention.k_norm.weight, cos, sin, *outs, attention.q_norm.eps, cos.numel() // dim,
        tokens, *(t.stride(1) for t in inputs), *(stride for out in outs for stride in out.stride()[:3]),
        HQ=hq, HK=hk, HV=hv, DIM=dim, num_warps=HEAD_WARPS)
    return outs


def _fits(attention: nn.Module, hidden_states: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> bool:
    dim, (batch, tokens) = attention.head_dim, hidden_states.shape[:2]
    norms = attention.q_norm, attention.k_norm, attention.v_norm
    return (not torch.compiler.is_compiling() and hidden_states.dim() == 3 and dim >= 2 and dim & (dim - 1) == 0  # tl.arange: a power of two
            and norms[0].with_scale and norms[1].with_scale and not norms[2].with_scale and len({n.eps for n in norms}) == 1
            and cos.shape == sin.shape and cos.shape[0] in (1, batch) and cos.shape[1:] == (tokens, dim)
            and cos.dtype == sin.dtype == hidden_states.dtype and cos.is_contiguous() and sin.is_contiguous())


def fused_attention_forward(self: nn.Module, hidden_states: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor],
                            attention_mask: torch.Tensor | None, cache=None, **kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
    """transformers' DiffusionGemma attention forward (encoder or decoder), its heads prepared by `heads`."""
    input_shape = hidden_states.shape[:-1]
    hidden_shape = (*input_shape, -1, self.head_dim)
    cos, sin = position_embeddings
    if not _fits(self, hidden_states, cos, sin):
        return type(self).forward(self, hidden_states, position_embeddings, attention_mask, cache=cache, **kwargs)
    stacked = getattr(self, "qkv_proj", None)
    if stacked is not None:  # one product, its columns the query's, the key's and the value's (`stack_projections`)
        widths = [p.out_features for p in (self.q_proj, self.k_proj, self.v_proj) if p is not None]
        query, key, *value = (t.view(hidden_shape) for t in stacked(hidden_states).split(widths, dim=-1))
    else:
        query, key, *value = (p(hidden_states).view(hidden_shape) for p in (self.q_proj, self.k_proj, self.v_proj) if p is not None)
    value = value[0] if value else key
    window = kv_windows.window(cache, self.layer_idx, input_shape[1]) if isinstance(self, DiffusionGemmaDecoderTextAttention) else None
    if window is not None:  # the canvas's keys and values behind the prompt's: the concatenation, made in place
        keys, values, cached = window
        query, _, _ = heads(self, query, key, value, cos, sin, key_out=keys[:, :, cached:].transpose(1, 2),
                            value_out=values[:, :, cached:].transpose(1, 2))
        query, key, value = query.transpose(1, 2), keys, values
    else:
        query, key, value = (t.transpose(1, 2) for t in heads(self, query, key, value, cos, sin))
        if isinstance(self, DiffusionGemmaDecoderTextAttention) and cache is not None:  # reads the prompt's cache, never writes it
            key, value = self.append_to_cache(cache, key, value)
        elif cache is not None:
            key, value = cache.update(key, value, self.layer_idx, kwargs=kwargs)
    interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation,
                                                                modeling_diffusion_gemma.eager_attention_forward)
    output, weights = interface(self, query, key, value, attention_mask, dropout=self.attention_dropout if self.training else 0.0,
                                scaling=self.scaling, sliding_window=self.sliding_window, is_causal=self.is_causal, **kwargs)
    return self.o_proj(output.reshape(*input_shape, -1).contiguous()), weights


def stack_projections(model: nn.Module, attentions: list[nn.Module]) -> int:
    """Give each of `attentions` (decoder attentions: the steps run them) one product for its query,
    key and value projections (`stacking.py`), the separate ones reading their rows of it, as do
    their tied twins in the encoder; returns how many were stacked."""
    count = 0
    for attention in attentions:
        parts = [p for p in (attention.q_proj, attention.k_proj, attention.v_proj) if p is not None]
        stacked = stack_linears(parts)
        if stacked is not None:
            share_rows(model, parts, stacked)
            attention.qkv_proj = stacked
            count += 1
    return count


def fuse_attention(model: nn.Module, device: torch.device, *, leave: nn.Module | None = None) -> int:
    """Give every DiffusionGemma attention of `model` the fused forward where Triton runs, the decoder's
    its projections stacked into one product (`stack_projections`); returns how many. Those inside
    `leave` keep transformers' forward and projections (torch.compile fuses them itself)."""
    if not expert_kernels.triton_usable(device):
        return 0
    left = {id(m) for m in leave.modules()} if leave is not None else set()
    fused = [module for module in model.modules() if isinstance(module, ATTENTIONS) and id(module) not in left]
    for module in fused:
        module.forward = types.MethodType(fused_attention_forward, module)
    decoders = [module for module in fused if isinstance(module, DiffusionGemmaDecoderTextAttention)]
    stack_projections(model, decoders)
    if decoders and len(decoders) == len(model.model.decoder.layers):  # every decoder attention reads the windows
        model.model.decoder.reads_kv_windows = True
    return len(fused)
