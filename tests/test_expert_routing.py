"""The experts' routing (app/engine/diffusion/expert_routing.py) against transformers'
own `grouped_mm` experts path: the same products on rows in the same order, so the same bits, in
float32 and bf16.

Row order: transformers sorts the expert ids with `torch.sort`, which on a GPU (CUB's radix sort)
keeps equal ids in their order, as the byte sort (`stable=True`) does, but on the CPU does not; and
the CPU's grouped-product fallback rounds a row by where it sits in its group (by 1 ulp). So the
bitwise comparison runs transformers' sort stable, as on a GPU; with the CPU's own order the two
agree to float32 rounding."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers.models.diffusion_gemma.modeling_diffusion_gemma import DiffusionGemmaTextExperts

from app.engine.diffusion.expert_routing import install_routing
from tests.test_expert_kernels import tiny_experts


def experts_of(dtype: torch.dtype) -> DiffusionGemmaTextExperts:
    return tiny_experts(experts=16, top_k=4).to(dtype)


def routing(tokens: int, experts: int, top_k: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k expert ids per token, skewed so that some experts get many rows, some one, some none."""
    scores = torch.rand(tokens, experts, generator=generator) * torch.linspace(0.05, 3.0, experts) ** 2
    weights, index = torch.topk(torch.softmax(scores, dim=-1), top_k, dim=-1)
    return index, weights / weights.sum(dim=-1, keepdim=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_routed_experts_give_transformers_grouped_mm_bits(dtype, monkeypatch):
    sort = torch.sort
    monkeypatch.setattr(torch, "sort", lambda *args, **kwargs: sort(*args, **(kwargs | {"stable": True})))  # as on a GPU
    theirs = experts_of(dtype)
    ours = copy.deepcopy(theirs)
    assert install_routing(ours) == 1
    eager = copy.deepcopy(theirs)
    eager.config._experts_implementation = "eager"
    assert install_routing(eager) == 0  # another implementation was asked for: left alone
    generator = torch.Generator().manual_seed(11)
    for tokens in (1, 7, 256):
        index, weights = routing(tokens, theirs.num_experts, 4, generator)
        hidden = torch.randn(tokens, 64, generator=generator).to(dtype)
        with torch.inference_mode():
            expected, got = theirs(hidden, index, weights), ours(hidden, index, weights)
        assert got.dtype == expected.dtype == dtype
        assert torch.equal(got, expected), f"{tokens} tokens: {float((got - expected).abs().max())}"
    counts = torch.bincount(index.reshape(-1), minlength=theirs.num_experts)
    assert counts.min() == 0 and counts.max() > 64  # empty experts and crowded ones were both exercised


def test_with_the_cpus_unstable_sort_they_agree_to_rounding():
    theirs = experts_of(torch.float32)
    ours = copy.deepcopy(theirs)
    install_routing(ours)
    generator = torch.Generator().manual_seed(12)
    index, weights = routing(256, theirs.num_experts, 4, generator)
    hidden = torch.randn(256, 64, generator=generator)
    with torch.inference_mode():
        expected, got = theirs(hidden, index, weights), ours(hidden, index, weights)
    assert float((got - expected).abs().max()) < 1e-5 * float(expected.abs().max())


@pytest.mark.parametrize("tokens, top_k, experts", [(1, 4, 16), (256, 8, 128), (300, 8, 128), (5, 2, 4)])
def test_the_counting_sort_kernel_gives_the_stable_sorts_order(tokens, top_k, experts):
    """`sort_by_expert` on a GPU is one Triton kernel (here under the interpreter); elsewhere torch's
    stable byte sort. The same order, tokens and row ends, also across several of its 2,048-id
    blocks (300 tokens x top-8) and with experts no row chose."""
    from app.engine.diffusion import expert_routing

    generator = torch.Generator().manual_seed(tokens)
    index, _ = routing(tokens, experts, top_k, generator)
    kernel = expert_routing.sort_by_expert(index, experts, kernel=True)  # under Triton's interpreter
    torch_sort = expert_routing.sort_by_expert(index, experts)  # the CPU's torch path
    for ours, theirs, name in zip(kernel, torch_sort, ("order", "token", "ends", "position"), strict=True):
        assert ours.dtype == theirs.dtype and torch.equal(ours, theirs), name
    order, _, ends, position = kernel
    assert int(ends[-1]) == tokens * top_k and torch.equal(order[position], torch.arange(tokens * top_k))


def test_sorted_rows_weigh_as_transformers_scatter_does():
    """The bf16/fp8 experts' rows stay in expert order (`SortedRows`); weighed where they sit, they
    are the float32 rows transformers' path writes in token order (gather, multiply, scatter)."""
    from app.engine.diffusion import expert_routing

    generator = torch.Generator().manual_seed(8)
    out, weights = torch.randn(40, 96, generator=generator).bfloat16(), torch.rand(40, generator=generator)
    order = torch.randperm(40, generator=generator)
    position = torch.empty_like(order)
    position[order] = torch.arange(40)
    scattered = torch.empty(40, 96)
    scattered[order] = out * weights[order].unsqueeze(-1)
    rows = expert_routing.SortedRows(out, position, weights, top_k=4)
    assert torch.equal(rows.weighted(), scattered.view(10, 4, 96))


def test_compiled_experts_trace_the_torch_routing_in_one_graph(tmp_path, monkeypatch):
    """Inside torch.compile (compiled layers, `fullgraph=True`) the routing takes its torch form,
    with no graph break, and gives the kernels' result."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    experts = experts_of(torch.float32)
    install_routing(experts)
    index, weights = routing(12, experts.num_experts, 4, torch.Generator().manual_seed(2))
    hidden = torch.randn(12, 64)
    with torch.inference_mode():
        expected = experts(hidden, index, weights)
        compiled = torch.compile(experts.forward, fullgraph=True)(hidden, index, weights)
    torch.testing.assert_close(compiled, expected, rtol=1e-5, atol=1e-5)
