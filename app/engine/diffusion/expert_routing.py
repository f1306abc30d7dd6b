"""The experts' routing: rows sorted by expert, two grouped products, weighted and put back.

transformers' `grouped_mm` experts path sorts a layer's 2,048 routed rows (256 canvas tokens x top-8)
by their expert id as int64, and after the down product undoes the sort with an inverse permutation
it builds (three kernels) and a gather. On an H100 that int64 radix sort took ~30 us a layer, ~0.9 ms a
bf16 forward (docs/benchmarks.md, profile). Here, on a CUDA GPU, one counting-sort kernel gives
the order, each row's token, the experts' row ends and where each routed slot's row sits (it was
seven kernels with the sort; elsewhere the ids are sorted as bytes: 128 experts fit one, so the
radix sort makes 2 passes, not 16), and the down product's rows stay where they are
(`SortedRows`): the fused layer's last kernel weighs and sums each token's rows from there, where
transformers writes them weighted into a float32 copy in token order and reads that again.

The arithmetic is transformers': the same products (`_grouped_linear`, or a quantized kernel), the
gate, routing weights multiplied in float32, the top-k summed in float32, on rows in the stable
order, which is the order transformers' sort leaves them in on a GPU (CUB's radix sort is stable).
So a bf16 forward is the same bit for bit (a test compares them, transformers' sort made stable:
on the CPU it is not, and the CPU's grouped-product fallback rounds a row by its place, by 1 ulp).
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from transformers.integrations.moe import _grouped_linear
from transformers.models.diffusion_gemma.modeling_diffusion_gemma import DiffusionGemmaTextExperts

from app.engine.diffusion import expert_kernels

triton, tl = expert_kernels.triton, getattr(expert_kernels, "tl", None)


@dataclass
class SortedRows:
    """The experts' down product in expert order, before its routing weights: routed slot s (token
    t's j-th expert, s = t * top_k + j) is row `position[s]` of `out`, to be multiplied by
    `weights[s]` in float32 and summed over each token's top-k. The fused layer's last kernel reads
    them so (`fused_layer.layer_end`), where transformers' path weighs, puts back and sums them in
    kernels of their own (a float32 copy of all the rows written and read again)."""

    out: torch.Tensor  # (tokens * top_k, hidden), the compute dtype
    position: torch.Tensor  # (tokens * top_k,) int64
    weights: torch.Tensor  # (tokens * top_k,) float32
    top_k: int

    def weighted(self) -> torch.Tensor:
        """(tokens, top_k, hidden) float32: each slot's row times its weight, as transformers computes them."""
        return (self.out[self.position] * self.weights.unsqueeze(-1)).view(-1, self.top_k, self.out.shape[-1])


def sorted_experts(hidden: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor, experts: int,
                   up: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], gate: Callable[[torch.Tensor], torch.Tensor], *,
                   down: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                   routed_down: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                   ) -> SortedRows | torch.Tensor:
    """The experts' rows for `hidden` (tokens, hidden) routed to `top_k_index` with `top_k_weights`,
    before their sum over the top-k (`top_k_sum` sums and casts them; the fused layer's last kernel
    does it instead, `fused_layer.layer_end`).

    `up(rows, ends)`: the gate/up product of rows sorted by expert (`ends`: int32 cumulative rows per
    expert); `gate`: the activation; then either `down(gated, ends)`, the down product (the rows
    come back as `SortedRows`), or `routed_down(gated, ends, order, weights)`, a down product that
    weighs each row r by `weights[order[r]]` in float32 and writes it to row `order[r]` itself (the
    Triton kernel's epilogue: the rows come back as (tokens, top_k, hidden) float32)."""
    tokens, top_k = top_k_index.shape
    order, token, ends, position = sort_by_expert(top_k_index, experts)
    gated = gate(up(hidden[token], ends))
    if routed_down is not None:
        return routed_down(gated, ends, order, top_k_weights.reshape(-1)).view(tokens, top_k, -1)
    return SortedRows(down(gated, ends), position, top_k_weights.reshape(-1), top_k)


def top_k_sum(rows: SortedRows | torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The experts' output from their rows (`sorted_experts`): weighted, summed in float32 as
    transformers sums them, then cast."""
    return (rows.weighted() if isinstance(rows, SortedRows) else rows).sum(dim=1).to(dtype)


def use_kernels(device: torch.device) -> bool:
    """Whether the routing runs its Triton kernels: on CUDA GPUs, outside torch.compile. Not under
    the CPU's Triton interpreter unless a test asks (`kernel=True`): it would interpret them in every
    CPU transcription of the suite, where CPUs run the torch forms anyway."""
    return device.type == "cuda" and triton is not None and not torch.compiler.is_compiling()


def sort_by_expert(top_k_index: torch.Tensor, experts: int, *,
                   kernel: bool | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The routed rows in expert order, stably: (order: each sorted row's index into the flattened
    `top_k_index`, int64; token: its token, int64; ends: each expert's cumulative row count, int32;
    position: the inverse of `order`, where each routed slot's row sits, int64).

    With `kernel` (default: `use_kernels`), one Triton kernel (`_sort_by_expert_kernel`, a counting
    sort); else torch's kernels (byte ids, sort, token division, histogram, cast, cumulative sum,
    inverse). Both are the stable order, so the same rows in the same places."""
    flat = top_k_index.reshape(-1)
    top_k = top_k_index.shape[-1]
    if use_kernels(flat.device) if kernel is None else kernel:
        order, token, position = (torch.empty_like(flat, dtype=torch.int64) for _ in range(3))
        ends = torch.empty(experts, dtype=torch.int32, device=flat.device)
        block = min(triton.next_power_of_2(flat.numel()), SORT_BLOCK)
        _sort_by_expert_kernel[(experts,)](flat.contiguous(), order, token, ends, position, flat.numel(), top_k, BLOCK=block,
                                           BLOCKS=triton.cdiv(flat.numel(), block))
        return order, token, ends, position
    expert_ids, order = torch.sort(flat.to(torch.uint8 if experts <= 256 else torch.int32), stable=True)
    counts = torch.histc(expert_ids.float() if flat.device.type == "cpu" else expert_ids.int(), bins=experts, min=0, max=experts - 1)
    position = torch.empty_like(order)
    position[order] = torch.arange(order.numel(), device=order.device)
    return order, order // top_k, torch.cumsum(counts, 0, dtype=torch.int32), position


SORT_BLOCK = 2048  # ids a program reads at a time: a dictation's 256 tokens x top-8 in one pass

if triton is not None:

    @triton.jit
    def _sort_by_expert_kernel(ids_ptr, order_ptr, token_ptr, ends_ptr, position_ptr, count, top_k, BLOCK: tl.constexpr,
                               BLOCKS: tl.constexpr):
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
            tl.store(position_ptr + at, place.to(tl.int64), mask=hit > 0)
            rank += tl.sum(hit, axis=0)
        tl.store(ends_ptr + expert, before + rank)


def _routed_rows(self: DiffusionGemmaTextExperts, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                 top_k_weights: torch.Tensor) -> SortedRows | torch.Tensor:
    if not self.is_transposed and expert_kernels.float_grouped_wanted(self.gate_up_proj):
        return _triton_rows(self, hidden_states, top_k_index, top_k_weights)

    def up(rows: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
        return _grouped_linear(rows, self.gate_up_proj, ends, is_transposed=self.is_transposed)

    def down(gated: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
        return _grouped_linear(gated, self.down_proj, ends, is_transposed=self.is_transposed)

    return sorted_experts(hidden_states, top_k_index, top_k_weights, self.num_experts, up, self._apply_gate, down=down)


def _triton_rows(self: DiffusionGemmaTextExperts, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                 top_k_weights: torch.Tensor) -> torch.Tensor:
    """`_routed_rows` through the Triton grouped kernel on the plain weights (`expert_kernels.float_grouped_wanted`:
    GPUs where torch's grouped GEMM has no kernel and syncs with the host), the down product weighing
    and putting back each row in its epilogue, as for int8/int4 experts."""
    gate_up, down = self.gate_up_proj, self.down_proj

    def up(rows: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
        return expert_kernels.dequant_grouped_mm(rows, gate_up, None, ends, "float", tuple(gate_up.shape))

    def routed_down(gated: torch.Tensor, ends: torch.Tensor, order: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return expert_kernels.dequant_grouped_mm(gated, down, None, ends, "float", tuple(down.shape), route=(order, weights))

    return sorted_experts(hidden_states, top_k_index, top_k_weights, self.num_experts, up, self._apply_gate, routed_down=routed_down)


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
