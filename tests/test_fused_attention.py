"""The attention heads' norms and rotary embedding as one kernel (app/engine/diffusion/fused_attention.py),
under Triton's interpreter in float32 against what it replaced: the fused RMSNorm and transformers'
`apply_rotary_pos_emb`, bit for bit (the interpreter's bf16 arithmetic is not a GPU's;
benchmarks/gpu_fused_check.py compares bf16 on a GPU)."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from transformers.models.diffusion_gemma.modeling_diffusion_gemma import DiffusionGemmaRMSNorm, apply_rotary_pos_emb

from app.engine.diffusion import fused_attention
from app.engine.diffusion.fused_norm import fuse_norms, rms_norm
from tests.test_fused_layer import model, run  # noqa: F401 - the fused layer's test model, a fixture

pytest.importorskip("triton", reason="Triton is installed with the test extras")


def head_norms(dim: int, seed: int) -> SimpleNamespace:
    generator = torch.Generator().manual_seed(seed)
    attention = SimpleNamespace(q_norm=DiffusionGemmaRMSNorm(dim, eps=1e-6), k_norm=DiffusionGemmaRMSNorm(dim, eps=1e-6),
                                v_norm=DiffusionGemmaRMSNorm(dim, eps=1e-6, with_scale=False))
    with torch.no_grad():
        attention.q_norm.weight.copy_(torch.rand(dim, generator=generator) * 1.5 + 0.25)
        attention.k_norm.weight.copy_(torch.rand(dim, generator=generator) * 1.5 + 0.25)
    return attention


@pytest.mark.parametrize("batch, angle_batch, own_values", [(1, 1, True), (3, 3, True), (3, 1, False)])
def test_the_heads_kernel_gives_the_norms_and_rotary_embeddings_bits(batch, angle_batch, own_values):
    """A batch with its own angles or sharing its positions'; values of their own (sliding attention)
    or the keys before their norm (full attention)."""
    generator = torch.Generator().manual_seed(batch + angle_batch)
    attention = head_norms(64, batch)
    query, key = torch.randn(batch, 7, 4, 64, generator=generator) * 3, torch.randn(batch, 7, 2, 64, generator=generator) * 3
    value = torch.randn(batch, 7, 2, 64, generator=generator) if own_values else key
    angles = torch.rand(angle_batch, 7, 32, generator=generator) * 40
    cos, sin = torch.cat([angles.cos()] * 2, dim=-1), torch.cat([angles.sin()] * 2, dim=-1)
    q, k, v = fused_attention.heads(attention, query, key, value, cos, sin)
    assert torch.equal(q, apply_rotary_pos_emb(rms_norm(attention.q_norm, query), cos, sin, unsqueeze_dim=2))
    assert torch.equal(k, apply_rotary_pos_emb(rms_norm(attention.k_norm, key), cos, sin, unsqueeze_dim=2))
    assert torch.equal(v, rms_norm(attention.v_norm, value))


def test_fused_attention_computes_the_fused_norms_model_bit_for_bit(model):  # noqa: F811
    """Encoder (writing the cache) and decoder (reading it) attention, sliding and full layers."""
    normed = copy.deepcopy(model)
    fuse_norms(normed, torch.device("cpu"))
    fused = copy.deepcopy(normed)
    assert fused_attention.fuse_attention(fused, torch.device("cpu")) == 4
    calls = []
    heads = fused_attention.heads
    fused_attention.heads = lambda *args, **kwargs: calls.append(args[1].shape) or heads(*args, **kwargs)
    try:
        expected_logits, expected, _ = run(normed)
        logits, got, _ = run(fused)
    finally:
        fused_attention.heads = heads
    assert len(calls) == 4  # two encoder and two decoder layers
    assert all(torch.equal(ours, theirs) for ours, theirs in zip(got, expected)) and torch.equal(logits, expected_logits)


def test_what_the_kernel_does_not_compute_takes_transformers_forward(model, monkeypatch):  # noqa: F811
    """A head size that is not a power of two, other norms, other angle layouts; and a CPU without the interpreter."""
    attention = model.model.decoder.layers[0].self_attn
    hidden, cos = torch.randn(2, 5, 96), torch.randn(2, 5, 32)
    assert fused_attention._fits(attention, hidden, cos, cos) and fused_attention._fits(attention, hidden, cos[:1], cos[:1])
    assert not fused_attention._fits(attention, hidden, cos.transpose(0, 1).contiguous().transpose(0, 1), cos)
    assert not fused_attention._fits(attention, hidden, cos.double(), cos.double())
    odd = copy.deepcopy(attention)
    odd.head_dim = 24
    assert not fused_attention._fits(odd, hidden, cos[..., :24], cos[..., :24])
    odd = copy.deepcopy(attention)
    odd.k_norm.eps = 1e-5
    assert not fused_attention._fits(odd, hidden, cos, cos)
    monkeypatch.setattr(fused_attention.expert_kernels, "interpreting", lambda: False)
    assert fused_attention.fuse_attention(copy.deepcopy(model), torch.device("cpu")) == 0


def test_compiled_attention_traces_transformers_forward_in_one_graph(model, tmp_path, monkeypatch):  # noqa: F811
    """With compiled layers Inductor fuses the heads itself: the fused forward must hand it
    transformers' code without a graph break (the layers compile with `fullgraph=True`)."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    fused = copy.deepcopy(model)
    fused_attention.fuse_attention(fused, torch.device("cpu"))
    attention = fused.model.encoder.language_model.layers[0].self_attn
    hidden = torch.randn(1, 5, 96)
    angles = torch.rand(1, 5, 16) * 5
    cos, sin = torch.cat([angles.cos()] * 2, dim=-1), torch.cat([angles.sin()] * 2, dim=-1)
    with torch.inference_mode():
        expected, _ = type(attention).forward(attention, hidden, (cos, sin), None)
        compiled, _ = torch.compile(attention, fullgraph=True)(hidden, (cos, sin), None)
    torch.testing.assert_close(compiled, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", [None, "int4"])  # int4: stacked codes and group scales
def test_decoder_projections_are_one_product_over_weights_held_once(model, mode):  # noqa: F811
    """The decoder attentions' query, key and value are one product; their separate linears and the
    encoder's tied ones read their rows of its weight (held once), and the model computes what it
    computed (bf16/fp32 stacked products may add in another order on a GPU; here, on the CPU, and in
    the int8/int4 kernel, which computes every tile alike, the same bits)."""
    from app.engine.diffusion.quantization import QuantizedLinear, quantize_backbone

    reference = copy.deepcopy(model)
    if mode is not None:
        quantize_backbone(reference, mode, torch.device("cpu"))
    fuse_norms(reference, torch.device("cpu"))
    fused = copy.deepcopy(reference)
    assert fused_attention.fuse_attention(fused, torch.device("cpu")) == 4
    for decoder, encoder in zip(fused.model.decoder.layers, fused.model.encoder.language_model.layers):
        stacked, parts = decoder.self_attn.qkv_proj, [decoder.self_attn.q_proj, decoder.self_attn.k_proj, decoder.self_attn.v_proj]
        parts = [p for p in parts if p is not None]  # full attention: no value projection
        starts = [sum(p.out_features for p in parts[:i]) for i in range(len(parts))]
        if mode is None:
            assert [p.weight.data_ptr() for p in parts] == [stacked.weight[row].data_ptr() for row in starts]
            assert encoder.self_attn.k_proj.weight.data_ptr() == stacked.weight[starts[1]].data_ptr()  # the tied encoder's too
        else:
            assert isinstance(stacked, QuantizedLinear)
            assert encoder.self_attn.k_proj.qweight.codes.data_ptr() == stacked.qweight.codes[starts[1]].data_ptr()
    expected_logits, expected, _ = run(reference)
    logits, got, _ = run(fused)
    assert all(torch.equal(ours, theirs) for ours, theirs in zip(got, expected)) and torch.equal(logits, expected_logits)
