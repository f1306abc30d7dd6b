"""The experts' routing: rows sorted by expert, two grouped products, weighted and put back.

transformers' `grouped_mm` experts path sorts a layer's 2,048 routed rows (256 canvas tokens x top-8)
by their expert id as int64, and after the down product undoes the sort with an inverse permutation
it builds (three kernels) and a gather. On an H100 that int64 radix sort took ~30 us a layer, ~0.9 ms a
bf16 forward (docs/benchmarks.md, profile). Here, on a CUDA GPU, one counting-sort kernel gives
the order, each row's token and the experts' row ends (it was seven kernels with the sort), and one
kernel weights the down product's rows and puts them back; elsewhere the ids are sorted as bytes
(128 experts fit one: the radix sort makes 2 passes, not 16) and a scatter puts the rows back.

The arithmetic is transformers': the same products (`_grouped_linear`, or a quantized kernel), the
gate, routing weights multiplied in float32, the top-k summed in float32, on rows in the stable
order, which is the order transformers' sort leaves them in on a GPU (CUB's radix sort is stable).
So a bf16 forward is the same bit for bit (a test compares them, transformers' sort made stable:
on the CPU it is not, and the CPU's grouped-product fallback rounds a row by its place, by 1 ulp).
"""

from __future__ import annotations

import types
from typing import Callable

import torch
from torch import nn
from transformers.integrations.moe import _grouped_linear
from transformers.models.diffusion_gemma.modeling_diffusion_gemma import DiffusionGemmaTextExperts

from app.engine.diffusion import expert_kernels

triton, tl = expert_kernels.triton, getattr(expert_kernels, "tl", None)


def sorted_experts(hidden: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor, experts: int,
                   up: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], gate: Callable[[torch.Tensor], torch.Tensor],
                   routed_down: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """The experts' weighted rows for `hidden` (tokens, hidden) routed to `top_k_index` with
    `top_k_weights`: (tokens, top_k, hidden) float32, each token's top-k rows in its routing's order.
    Their sum over the top-k, cast to the input's dtype, is the experts' output (`top_k_sum`); the
    fused layer sums them in its last kernel instead (`fused_layer.layer_end`: two kernels fewer).

    `up(rows, ends)`: the gate/up product of rows sorted by expert (`ends`: int32 cumulative rows per
    expert); `gate`: the activation; `routed_down(gated, ends, order, weights)`: the down product,
    each row r times `weights[order[r]]` in float32 and written to row `order[r]`."""
    tokens, top_k = top_k_index.shape
    order, token, ends = sort_by_expert(top_k_index, experts)
    unsorted = routed_down(gate(up(hidden[token], ends)), ends, order, top_k_weights.reshape(-1))
    return unsorted.view(tokens, top_k, -1)


def top_k_sum(rows: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The experts' output from their weighted rows (`sorted_experts`): summed in float32 as
    transformers sums them, then cast."""
    return rows.sum(dim=1).to(dtype)


def use_kernels(device: torch.device) -> bool:
    """Whether the routing runs its Triton kernels: on CUDA GPUs, outside torch.compile. Not under
    the CPU's Triton interpreter unless a test asks (`kernel=True`): it would interpret them in every
    CPU transcription of the suite, where CPUs run the torch forms anyway."""
    return device.type == "cuda" and triton is not None and not torch.compiler.is_compiling()


def sort_by_expert(top_k_index: torch.Tensor, experts: int, *, kernel: bool | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The routed rows in expert order, stably: (order: each sorted row's index into the flattened
    `top_k_index`, int64; token: its token, int64; ends: each expert's cumulative row count, int32).

    With `kernel` (default: `use_kernels`), one Triton kernel (`_sort_by_expert_kernel`, a counting
    sort); else six torch kernels (byte ids, sort, token division, histogram, cast, cumulative sum).
    Both are the stable order, so the same rows in the same places."""
    flat = top_k_index.reshape(-1)
    top_k = top_k_index.shape[-1]
    if use_kernels(flat.device) if kernel is None else kernel:
        order, token = torch.empty_like(flat, dtype=torch.int64), torch.empty_like(flat, dtype=torch.int64)
        ends = torch.empty(experts, dtype=torch.int32, device=flat.device)
        block = min(triton.next_power_of_2(flat.numel()), SORT_BLOCK)
        _sort_by_expert_kernel[(experts,)](flat.contiguous(), order, token, ends, flat.numel(), top_k, BLOCK=block,
                                           BLOCKS=triton.cdiv(flat.numel(), block))
        return order, token, ends
    expert_ids, order = torch.sort(flat.to(torch.uint8 if experts <= 256 else torch.int32), stable=True)
    counts = torch.histc(expert_ids.float() if flat.device.type == "cpu" else expert_ids.int(), bins=experts, min=0, max=experts - 1)
    return order, order // top_k, torch.cumsum(counts, 0, dtype=torch.int32)


SORT_BLOCK = 2048  # ids a program reads at a time: a dictation's 256 tokens x top-8 in one pass

if triton is not None:

    @triton.jit
    def _sort_by_expert_kernel(ids_ptr, order_ptr, token_ptr, ends_ptr, count, top_k, BLOCK: tl.constexpr, BLOCKS: tl.constexpr):
        """Program e places expert e's rows: it counts the rows of experts before e (where e's rows
        start) and numbers e's own in their original order (stable), reading every id; 128 programs
        over a few thousand ids cost less than the six kernels of a sort. (BLOCKS, the blocks of ids,
        is a constant: few values occur, and a loop to a run-time count fails in Triton's interpreter.)"""
        expert = tl.program_id(0)
        before = 0
        for block in range(BLOCKS):
            at = block * BLOCK + tl.arange(0, BLOCK)
            inside = at < count
            ids = tl.load(ids_ptr + at, mask=inside, other=-1)
            before += tl.sum((inside & (ids < expert)).to(tl.int32), axis=0)
        rank = 0
        for block in range(BLOCKS):
            at = block * BLOCK + tl.arange(0, BLOCK)
            ids = tl.load(ids_ptr + at, mask=at < count, other=-1)
            hit = (ids == expert).to(tl.int32)
            place = before + rank + tl.cumsum(hit, axis=0) - hit
            tl.store(order_ptr + place, at.to(tl.int64), mask=hit > 0)
            tl.store(token_ptr + place, (at // top_k).to(tl.int64), mask=hit > 0)
            rank += tl.sum(hit, axis=0)
        tl.store(ends_ptr + expert, before + rank)

    @triton.jit
    def _route_rows_kernel(out_ptr, order_ptr, weights_ptr, unsorted_ptr, WIDTH: tl.constexpr, BLOCK: tl.constexpr):
        """Sorted row r, in float32 times weights[order[r]], to row order[r]."""
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK)
        inside = cols < WIDTH
        slot = tl.load(order_ptr + row)
        values = tl.load(out_ptr + row * WIDTH + cols, mask=inside, other=0.0).to(tl.float32) * tl.load(weights_ptr + slot)
        tl.store(unsorted_ptr + slot * WIDTH + cols, values, mask=inside)


def route_rows(out: torch.Tensor, order: torch.Tensor, weights: torch.Tensor, *, kernel: bool | None = None) -> torch.Tensor:
    """`out` (rows sorted by expert) times their routing weights in float32, put back at `order`:
    with `kernel` (default: `use_kernels`) one Triton kernel (`_route_rows_kernel`; the int8/int4
    products do it in their epilogue), else a gather, a multiply and a scatter. The same products."""
    unsorted = torch.empty(out.shape, dtype=torch.float32, device=out.device)  # routing weights are float32
    if use_kernels(out.device) if kernel is None else kernel:
        width = out.shape[-1]
        _route_rows_kernel[(out.shape[0],)](out.contiguous(), order, weights, unsorted, WIDTH=width, BLOCK=triton.next_power_of_2(width))
        return unsorted
    unsorted[order] = out * weights[order].unsqueeze(-1)
    return unsorted


def _routed_rows(self: DiffusionGemmaTextExperts, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                 top_k_weights: torch.Tensor) -> torch.Tensor:
    def up(rows: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
        return _grouped_linear(rows, self.gate_up_proj, ends, is_transposed=self.is_transposed)

    def routed_down(gated: torch.Tensor, ends: torch.Tensor, order: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return route_rows(_grouped_linear(gated, self.down_proj, ends, is_transposed=self.is_transposed), order, weights)

    return sorted_experts(hidden_states, top_k_index, top_k_weights, self.num_experts, up, self._apply_gate, routed_down)


def _routed_forward(self: DiffusionGemmaTextExperts, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                    top_k_weights: torch.Tensor) -> torch.Tensor:
    return top_k_sum(self.routed_rows(hidden_states, top_k_index, top_k_weights), hidden_states.dtype)


def install_routing(model: nn.Module) -> int:
    """Give every unquantized experts module of `model` that runs transformers' `grouped_mm` path this
    routing (`forward`, and `routed_rows`: the rows before their top-k sum); returns how many.
    Quantized experts route this way already (`QuantizedExperts`)."""
    count = 0
    for module in model.modules():
        if isinstance(module, DiffusionGemmaTextExperts) and module.config._experts_implementation == "grouped_mm" \
                and isinstance(getattr(module, "gate_up_proj", None), torch.Tensor) and not module.has_bias:
            module.routed_rows = types.MethodType(_routed_rows, module)
            module.forward = types.MethodType(_routed_forward, module)
            count += 1
    return count
