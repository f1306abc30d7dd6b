"""The rotary position embedding as one kernel (app/engine/diffusion/fused_rope.py), under Triton's
interpreter, against transformers' `apply_rotary_pos_emb`: elementwise, with transformers' roundings,
so the same bits (float32 here; the interpreter's bf16 arithmetic is not the GPU's)."""

from __future__ import annotations

import pytest
import torch
from transformers.models.diffusion_gemma import modeling_diffusion_gemma

from app.engine.diffusion import fused_rope

pytest.importorskip("triton", reason="Triton is installed with the test extras")


@pytest.mark.parametrize("batch, angle_batch", [(1, 1), (3, 3), (3, 1)])  # a batch shares its positions' angles, or has its own
def test_the_rope_kernel_gives_transformers_bits(batch, angle_batch):
    generator = torch.Generator().manual_seed(batch + angle_batch)
    x = torch.randn(batch, 7, 4, 64, generator=generator)
    angles = torch.rand(angle_batch, 7, 32, generator=generator) * 40
    cos, sin = torch.cat([angles.cos()] * 2, dim=-1), torch.cat([angles.sin()] * 2, dim=-1)
    assert torch.equal(fused_rope.rope(x, cos, sin), fused_rope.transformers_rope(x, cos, sin, unsqueeze_dim=2))


def test_the_kernel_is_taken_only_for_what_it_computes(monkeypatch):
    """Another broadcast dimension, other layouts and dtypes, and devices Triton does not run on get
    transformers' own (here the CPU runs Triton's interpreter, as on a GPU)."""
    x, cos = torch.randn(2, 5, 3, 16), torch.randn(2, 5, 16)
    assert fused_rope._fits(x, cos, cos, 2) and fused_rope._fits(x, cos[:1], cos[:1], 2)
    assert not fused_rope._fits(x, cos, cos, 1)
    assert not fused_rope._fits(x.transpose(1, 2), cos, cos, 2)
    assert not fused_rope._fits(x[..., :12], cos[..., :12], cos[..., :12], 2)  # not a power of two
    assert not fused_rope._fits(x, cos.double(), cos.double(), 2)
    monkeypatch.setattr(fused_rope.expert_kernels, "interpreting", lambda: False)  # a CPU without the interpreter
    assert not fused_rope._fits(x, cos, cos, 2) and not fused_rope.fuse_rope(torch.device("cpu"))


def test_fuse_rope_puts_the_kernel_in_transformers_attention(monkeypatch):
    monkeypatch.setattr(modeling_diffusion_gemma, "apply_rotary_pos_emb", fused_rope.transformers_rope)  # restored after
    assert fused_rope.fuse_rope(torch.device("cpu"))
    assert modeling_diffusion_gemma.apply_rotary_pos_emb is fused_rope.apply_rotary_pos_emb
    x, cos = torch.randn(1, 5, 3, 16), torch.randn(1, 5, 16)
    assert torch.equal(modeling_diffusion_gemma.apply_rotary_pos_emb(x, cos, cos, unsqueeze_dim=2),
                       fused_rope.transformers_rope(x, cos, cos, unsqueeze_dim=2))


def test_compiled_code_traces_transformers_rope_in_one_graph(tmp_path, monkeypatch):
    """With compiled layers Inductor fuses the rotary embedding itself: the dispatch must hand it
    transformers' code without a graph break (the layers compile with `fullgraph=True`)."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    x, cos = torch.randn(1, 5, 3, 16), torch.randn(1, 5, 16)
    compiled = torch.compile(fused_rope.apply_rotary_pos_emb, fullgraph=True)
    torch.testing.assert_close(compiled(x, cos, cos, unsqueeze_dim=2), fused_rope.transformers_rope(x, cos, cos, unsqueeze_dim=2))
