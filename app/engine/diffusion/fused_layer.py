"""DiffusionGemma's text layer with its norms, residual additions and routing in three Triton kernels.

Around its attention, dense MLP and experts, a layer of transformers' DiffusionGemma runs seven RMSNorms,
three additions, four scalings and the router's softmax, top-k and renormalisation: ~20 kernels
of a few microseconds each on 256 rows, 30 layers a forward, where a step is bound by its number of
kernels (docs/benchmarks.md, H100 profile). Here they are three, each reading its rows once:

- `after_attention`: the attention output's norm plus the residual (`mid`, the next residual), then
  `mid`'s three norms (dense MLP input, experts input, and the router's unscaled norm times its scale
  and 1/sqrt(hidden)), sharing one root mean square, as their eps are equal;
- `route`: the router's softmax over the experts, top-k, renormalisation, and per-expert scale;
- `layer_end`: the experts' top-k sum (where they hand over their weighted rows), the dense and
  expert outputs' norms, their sum's norm, plus `mid`, times the layer scalar; and the norm that
  reads the output next (the following layer's input norm, or the model's last), handed to it.

Each rounds to the layer's dtype where transformers' forward does (after every norm, addition and
scaling), computing in float32 between, with the fused RMSNorm's formula (`fused_norm.py`). The
router's softmax sums in another order than torch's, so its weights may differ in the last bits;
the top-k sum adds in the order a CUDA GPU's torch.sum does (`_top_k_sum`; the CPU's torch adds
more than four rows in another order).
Layers whose norms do not fit these kernels (another epsilon) keep transformers' forward, as do
layers torch.compile fuses itself.
"""

from __future__ import annotations

import functools
import types

import torch
from torch import nn
from transformers.models.diffusion_gemma.modeling_diffusion_gemma import (
    DiffusionGemmaDecoderTextLayer,
    DiffusionGemmaEncoderTextLayer,
)

from app.engine.diffusion import expert_kernels, fused_norm
from app.engine.diffusion.expert_routing import SortedRows

triton, tl = expert_kernels.triton, getattr(expert_kernels, "tl", None)
TEXT_LAYERS = (DiffusionGemmaDecoderTextLayer, DiffusionGemmaEncoderTextLayer)
# Warps a row of the hidden size: 4, as the fused RMSNorm launches, for the same reduction layout and
# so the same sums of squares (benchmarks/gpu_fused_check.py compares them on a GPU); no spills at 4,096
# values a row on any target the spill test builds (tests/test_triton_targets.py).
ROW_WARPS = 4
# One warp a token's routing: its 128 scores are 4 a thread, and the top-k's nine reductions a
# step stay in the warp's shuffles, where 4 warps met at a barrier for each (sm_90 code: 53 BAR).
ROUTE_WARPS = 1

if triton is not None:
    normalized = fused_norm.normalized  # the RMSNorm's formula, shared with the fused norm

    @triton.jit
    def _row(ptr, at, inside):
        """A row of `ptr` in float32 (zeros past the width)."""
        return tl.load(ptr + at, mask=inside, other=0.0).to(tl.float32)

    @triton.jit
    def _scaled(unit, weight_ptr, cols, inside, dtype: tl.constexpr):
        """A normalized row times a norm's weight, rounded to `dtype`: the norm's output."""
        return (unit * _row(weight_ptr, cols, inside)).to(dtype)

    @triton.jit
    def _after_attention_kernel(residual_ptr, attn_ptr, post_attn_w, pre_w, pre_2_w, router_w, mid_ptr, dense_ptr, experts_ptr,
                                router_ptr, eps, root, WIDTH: tl.constexpr, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK)
        inside = cols < WIDTH
        at = row * WIDTH + cols
        dtype: tl.constexpr = mid_ptr.dtype.element_ty
        normed = _scaled(normalized(_row(attn_ptr, at, inside), eps, WIDTH), post_attn_w, cols, inside, dtype)
        mid = (_row(residual_ptr, at, inside) + normed.to(tl.float32)).to(dtype)
        tl.store(mid_ptr + at, mid, mask=inside)
        unit = normalized(mid.to(tl.float32), eps, WIDTH)
        tl.store(dense_ptr + at, _scaled(unit, pre_w, cols, inside, dtype), mask=inside)
        tl.store(experts_ptr + at, _scaled(unit, pre_2_w, cols, inside, dtype), mask=inside)
        scaled = _scaled(unit.to(dtype).to(tl.float32), router_w, cols, inside, dtype)  # the router's unscaled norm, times its scale
        tl.store(router_ptr + at, (scaled.to(tl.float32) * root).to(dtype), mask=inside)

    @triton.jit
    def _route_kernel(scores_ptr, expert_scale_ptr, weights_ptr, index_ptr, EXPERTS: tl.constexpr, EXPERTS_P2: tl.constexpr,
                      TOP_K: tl.constexpr, TOP_K_P2: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        e = tl.arange(0, EXPERTS_P2)
        real = e < EXPERTS
        scores = tl.load(scores_ptr + row * EXPERTS + e, mask=real, other=float("-inf")).to(tl.float32)
        exp = tl.exp(scores - tl.max(scores, axis=0))
        probs = tl.where(real, tl.math.div_rn(exp, tl.sum(exp, axis=0)), -1.0)
        # Ranked as torch.topk ranks them, NaN above everything: one NaN score (an overflow upstream)
        # makes every probability NaN, and with NaN compared as a number no expert ever equalled the
        # best, so the index was past the experts, read and written out of bounds downstream.
        left = tl.where(probs != probs, float("inf"), probs)
        k = tl.arange(0, TOP_K_P2)
        chosen = tl.zeros([TOP_K_P2], dtype=tl.float32)
        index = tl.zeros([TOP_K_P2], dtype=tl.int32)
        for j in tl.static_range(TOP_K):  # the largest first, the lowest expert id among equals
            at = tl.min(tl.where(left == tl.max(left, axis=0), e, EXPERTS_P2), axis=0)
            chosen = tl.where(k == j, tl.sum(tl.where(e == at, probs, 0.0), axis=0), chosen)  # the probability itself, NaN included
            index = tl.where(k == j, at, index)
            left = tl.where(e == at, -1.0, left)
        mine = k < TOP_K
        weights = tl.math.div_rn(chosen, tl.sum(tl.where(mine, chosen, 0.0), axis=0))
        weights = weights * tl.load(expert_scale_ptr + index, mask=mine, other=0.0).to(tl.float32)
        tl.store(weights_ptr + row * TOP_K + k, weights, mask=mine)
        tl.store(index_ptr + row * TOP_K + k, index.to(tl.int64), mask=mine)

    @triton.jit
    def _top_k_sum(rows_ptr, position_ptr, weights_ptr, row, cols, inside, WIDTH: tl.constexpr, BLOCK: tl.constexpr,
                   TOP_K: tl.constexpr, SORTED: tl.constexpr):
        """A token's TOP_K expert rows (float32) summed as a CUDA GPU's torch.sum over them does: four
        accumulators, row j into accumulator j % 4, then the four added in order (the unrolled loop of
        `thread_reduce_impl` in ATen's Reduce.cuh, where one thread reduces each output: the top-k is
        too short to be split between threads). SORTED: the rows sit in expert order, each to be
        weighted first (`expert_routing.SortedRows`); else weighted already, in token order."""
        first = tl.zeros([BLOCK], dtype=tl.float32)
        second, third, fourth = first, first, first
        for j in tl.static_range(TOP_K):
            if SORTED:
                slot = row * TOP_K + j
                value = _row(rows_ptr, tl.load(position_ptr + slot) * WIDTH + cols, inside) * tl.load(weights_ptr + slot)
            else:
                value = _row(rows_ptr, (row * TOP_K + j) * WIDTH + cols, inside)
            if j % 4 == 0:
                first += value
            elif j % 4 == 1:
                second += value
            elif j % 4 == 2:
                third += value
            else:
                fourth += value
        return ((first + second) + third) + fourth

    @triton.jit
    def _layer_end_kernel(dense_ptr, experts_ptr, position_ptr, weights_ptr, mid_ptr, post_1_w, post_2_w, post_w, scalar_ptr,
                          out_ptr, eps, next_w, next_ptr, next_eps, WIDTH: tl.constexpr, BLOCK: tl.constexpr, TOP_K: tl.constexpr,
                          SORTED: tl.constexpr, NEXT: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK)
        inside = cols < WIDTH
        at = row * WIDTH + cols
        dtype: tl.constexpr = out_ptr.dtype.element_ty
        dense = _scaled(normalized(_row(dense_ptr, at, inside), eps, WIDTH), post_1_w, cols, inside, dtype)
        if TOP_K == 0:  # the experts' output, summed already
            experts = _row(experts_ptr, at, inside)
        else:  # their rows: summed here, cast as torch casts the sum
            experts = _top_k_sum(experts_ptr, position_ptr, weights_ptr, row, cols, inside, WIDTH, BLOCK, TOP_K, SORTED)
            experts = experts.to(dtype).to(tl.float32)
        experts = _scaled(normalized(experts, eps, WIDTH), post_2_w, cols, inside, dtype)
        both = (dense.to(tl.float32) + experts.to(tl.float32)).to(dtype).to(tl.float32)
        both = _scaled(normalized(both, eps, WIDTH), post_w, cols, inside, dtype)
        out = (_row(mid_ptr, at, inside) + both.to(tl.float32)).to(dtype)
        out = (out.to(tl.float32) * tl.load(scalar_ptr).to(tl.float32)).to(dtype)
        tl.store(out_ptr + at, out, mask=inside)
        if NEXT:  # the norm that reads this output next: the following layer's input norm, or the model's last
            tl.store(next_ptr + at, _scaled(normalized(out.to(tl.float32), next_eps, WIDTH), next_w, cols, inside, dtype), mask=inside)


def _rows(hidden: torch.Tensor) -> tuple[int, int, int]:
    width = hidden.shape[-1]
    block = triton.next_power_of_2(width)
    return hidden.numel() // width, width, block


def after_attention(layer: nn.Module, residual: torch.Tensor, attn: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(mid, dense MLP input, experts input, router input), all shaped as `residual`."""
    residual, attn = residual.contiguous(), attn.contiguous()
    rows, width, block = _rows(residual)
    mid, dense, experts, router = (torch.empty_like(residual) for _ in range(4))
    _after_attention_kernel[(rows,)](
        residual, attn, layer.post_attention_layernorm.weight, layer.pre_feedforward_layernorm.weight,
        layer.pre_feedforward_layernorm_2.weight, layer.router.scale, mid, dense, experts, router,
        layer.post_attention_layernorm.eps, layer.router.scalar_root_size, WIDTH=width, BLOCK=block, num_warps=ROW_WARPS)
    return mid, dense, experts, router


def route(router: nn.Module, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The router's (top-k weights float32, top-k expert ids int64) from its projection's `scores`."""
    scores = scores.reshape(-1, scores.shape[-1]).contiguous()
    top_k, experts = router.config.top_k_experts, scores.shape[-1]
    weights = torch.empty(scores.shape[0], top_k, dtype=torch.float32, device=scores.device)
    index = torch.empty(scores.shape[0], top_k, dtype=torch.int64, device=scores.device)
    _route_kernel[(scores.shape[0],)](scores, router.per_expert_scale, weights, index, EXPERTS=experts,
                                      EXPERTS_P2=triton.next_power_of_2(experts), TOP_K=top_k,
                                      TOP_K_P2=triton.next_power_of_2(top_k), num_warps=ROUTE_WARPS)
    return weights, index


def layer_end(layer: nn.Module, dense: torch.Tensor, experts: SortedRows | torch.Tensor, mid: torch.Tensor, *, rows: bool = False,
              following: nn.Module | None = None) -> torch.Tensor:
    """The layer's output from its dense MLP's output, the experts' and `mid`. `experts` is their
    output (shaped as `mid`), or with `rows` their rows before the top-k sum (`sorted_experts`:
    `SortedRows`, or (tokens, top_k, hidden) float32 weighted already), which this kernel weighs,
    sums and casts, as transformers' experts would in more kernels. With `following` (the fused norm
    that reads this output next), that norm is computed here too and handed to it (`fused_norm.ahead`)."""
    sorted_rows = experts if isinstance(experts, SortedRows) else None
    top_k = experts.top_k if sorted_rows is not None else experts.shape[1] if rows else 0
    experts = sorted_rows.out.contiguous() if sorted_rows is not None else experts.contiguous()
    position, weights = (sorted_rows.position, sorted_rows.weights) if sorted_rows is not None else (experts, experts)  # unused unless sorted
    dense = dense.contiguous()
    tokens, width, block = _rows(mid)
    out = torch.empty_like(mid)
    normed = torch.empty_like(mid) if following is not None else out  # unused without a following norm
    _layer_end_kernel[(tokens,)](
        dense, experts, position, weights, mid, layer.post_feedforward_layernorm_1.weight, layer.post_feedforward_layernorm_2.weight,
        layer.post_feedforward_layernorm.weight, layer.layer_scalar, out, layer.post_feedforward_layernorm.eps,
        following.weight if following is not None else out, normed, following.eps if following is not None else 0.0,
        WIDTH=width, BLOCK=block, TOP_K=top_k, SORTED=sorted_rows is not None, NEXT=following is not None, num_warps=ROW_WARPS)
    if following is not None:
        fused_norm.ahead(following, out, normed)
    return out


def fused_forward(self: nn.Module, hidden_states: torch.Tensor, position_embeddings: torch.Tensor = None,
                  attention_mask: torch.Tensor | None = None, position_ids: torch.Tensor | None = None, cache=None,
                  *, following: nn.Module | None = None, **kwargs) -> torch.Tensor:
    """transformers' text layer forward (encoder and decoder alike), norms and routing fused;
    `following`: the fused norm that reads the output next, computed by the layer's last kernel."""
    attn, _ = self.self_attn(hidden_states=self.input_layernorm(hidden_states), position_embeddings=position_embeddings,
                             attention_mask=attention_mask, position_ids=position_ids, cache=cache, **kwargs)
    mid, dense_in, experts_in, router_in = after_attention(self, hidden_states, attn)
    dense_out = self.mlp(dense_in)
    weights, index = route(self.router, self.router.proj(router_in))
    experts_in = experts_in.reshape(-1, experts_in.shape[-1])
    rows = self.experts.routed_rows(experts_in, index, weights) if hasattr(self.experts, "routed_rows") else None
    if rows is None:  # experts that sum their rows themselves (transformers' own, or dequantized)
        return layer_end(self, dense_out, self.experts(experts_in, index, weights).reshape(mid.shape), mid, following=following)
    return layer_end(self, dense_out, rows, mid, rows=True, following=following)


def fusable(layer: nn.Module) -> bool:
    """Whether `layer`'s norms are the ones the kernels compute: scaled (the router's unscaled), of one epsilon."""
    norms = [layer.post_attention_layernorm, layer.pre_feedforward_layernorm, layer.pre_feedforward_layernorm_2,
             layer.post_feedforward_layernorm_1, layer.post_feedforward_layernorm_2, layer.post_feedforward_layernorm]
    return all(norm.with_scale and norm.eps == layer.router.norm.eps for norm in norms) and not layer.router.norm.with_scale


def fuse_layers(model: nn.Module, device: torch.device, *, leave: nn.Module | None = None) -> int:
    """Give every fusable text layer of `model` the fused forward where Triton runs; returns how many.
    Layers inside `leave` keep transformers' forward (torch.compile fuses them itself). Call it after
    `fused_norm.fuse_norms`: a layer computes the norm after it only if that norm is fused by then."""
    if not expert_kernels.triton_usable(device):
        return 0
    left = {id(m) for m in leave.modules()} if leave is not None else set()
    count = 0
    for stack in model.modules():  # the text models: their layers in order, then their last norm
        layers = getattr(stack, "layers", None)
        if not isinstance(layers, nn.ModuleList):
            continue
        for at, layer in enumerate(layers):
            if isinstance(layer, TEXT_LAYERS) and id(layer) not in left and fusable(layer):
                nxt = layers[at + 1].input_layernorm if at + 1 < len(layers) else getattr(stack, "norm", None)
                following = nxt if fused_norm.takes_ahead(nxt) else None
                layer.forward = types.MethodType(functools.partial(fused_forward, following=following), layer)
                count += 1
    return count
