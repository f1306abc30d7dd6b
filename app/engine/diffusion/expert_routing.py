"""The experts' routing: rows sorted by expert as bytes, two grouped products, weighted and put back.

transformers' `grouped_mm` experts path sorts a layer's 2,048 routed rows (256 canvas tokens x top-8)
by their expert id as int64, and after the down product undoes the sort with an inverse permutation
it builds (three kernels) and a gather. On an H100 that int64 radix sort took ~30 us a layer, ~0.9 ms a
bf16 forward (docs/benchmarks.md, profile). Here the ids are sorted as bytes (128 experts fit one:
the radix sort makes 2 passes, not 16) and the down product's rows are put back by one scatter.

The arithmetic is transformers': the same products (`_grouped_linear`, or a quantized kernel), the
gate, routing weights multiplied in float32, the top-k summed in float32. Rows of one expert may
come in another order than transformers' unstable sort leaves them, which changes no row's result:
each row's product is its own. So a bf16 forward is the same bit for bit (a test compares them).
"""

from __future__ import annotations

import types
from typing import Callable

import torch
from torch import nn
from transformers.integrations.moe import _grouped_linear
from transformers.models.diffusion_gemma.modeling_diffusion_gemma import DiffusionGemmaTextExperts


def sorted_experts(hidden: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor, experts: int,
                   up: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], gate: Callable[[torch.Tensor], torch.Tensor],
                   routed_down: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """The experts' output for `hidden` (tokens, hidden) routed to `top_k_index` with `top_k_weights`.

    `up(rows, ends)`: the gate/up product of rows sorted by expert (`ends`: int32 cumulative rows per
    expert); `gate`: the activation; `routed_down(gated, ends, order, weights)`: the down product,
    each row r times `weights[order[r]]` in float32 and written to row `order[r]`."""
    tokens, top_k = top_k_index.shape
    expert_ids, order = torch.sort(top_k_index.reshape(-1).to(torch.uint8 if experts <= 256 else torch.int32), stable=True)
    rows = hidden[order // top_k]
    counts = torch.histc(expert_ids.float() if hidden.device.type == "cpu" else expert_ids.int(), bins=experts, min=0, max=experts - 1)
    ends = torch.cumsum(counts, 0, dtype=torch.int32)
    unsorted = routed_down(gate(up(rows, ends)), ends, order, top_k_weights.reshape(-1))
    return unsorted.view(tokens, top_k, -1).sum(dim=1).to(hidden.dtype)


def route_rows(out: torch.Tensor, order: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """`out` (rows sorted by expert) times their routing weights in float32, put back at `order`."""
    weighted = out * weights[order].unsqueeze(-1)
    unsorted = torch.empty_like(weighted)
    unsorted[order] = weighted
    return unsorted


def _byte_sorted_forward(self: DiffusionGemmaTextExperts, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                         top_k_weights: torch.Tensor) -> torch.Tensor:
    def up(rows: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
        return _grouped_linear(rows, self.gate_up_proj, ends, is_transposed=self.is_transposed)

    def routed_down(gated: torch.Tensor, ends: torch.Tensor, order: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return route_rows(_grouped_linear(gated, self.down_proj, ends, is_transposed=self.is_transposed), order, weights)

    return sorted_experts(hidden_states, top_k_index, top_k_weights, self.num_experts, up, self._apply_gate, routed_down)


def sort_experts_by_byte(model: nn.Module) -> int:
    """Give every unquantized experts module of `model` that runs transformers' `grouped_mm` path the
    byte-sorted routing; returns how many. Quantized experts route this way already."""
    count = 0
    for module in model.modules():
        if isinstance(module, DiffusionGemmaTextExperts) and module.config._experts_implementation == "grouped_mm" \
                and isinstance(getattr(module, "gate_up_proj", None), torch.Tensor) and not module.has_bias:
            module.forward = types.MethodType(_byte_sorted_forward, module)
            count += 1
    return count
