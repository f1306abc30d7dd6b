"""The gated GELU kernel and the stacked dense MLP (app/engine/diffusion/fused_mlp.py), under Triton's
interpreter in float32 against transformers' own forward (the interpreter's bf16 arithmetic is not a
GPU's, and it has no libdevice: its tanh comes from exp; benchmarks/gpu_fused_check.py compares the
GPU's kernel with torch's bf16 GELU and product bit for bit)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from app.engine.diffusion import expert_routing, fused_mlp
from app.engine.diffusion.expert_routing import install_routing
from app.engine.diffusion.quantization import QuantizedLinear
from app.engine.diffusion.stacking import stack_linears
from tests.test_fused_layer import model, run  # noqa: F401 - the fused layer's test model, a fixture

pytest.importorskip("triton", reason="Triton is installed with the test extras")


@pytest.mark.parametrize("rows, width", [(9, 704), (3, 2112), (5, 24)])
def test_the_kernel_computes_gelu_of_the_gate_times_up(rows, width):
    """An expert's width (one program a row), the dense MLP's (three), a small one; values out to where
    tanh saturates and the exp-based tanh of the interpreter would overflow. (That tanh loses a few
    float32 bits near +-1, where 1 + tanh cancels: absolute 1e-5 on values of ~10.)"""
    x = torch.randn(rows, 2 * width, generator=torch.Generator().manual_seed(width)) * 4
    x[0, :4] = torch.tensor([30.0, -30.0, 0.0, 1e-6])
    gate, up = x.chunk(2, dim=-1)
    torch.testing.assert_close(fused_mlp.gelu_tanh_mul(x), nn.functional.gelu(gate, approximate="tanh") * up, rtol=2e-6, atol=1e-5)


def test_stacked_mlps_and_the_gated_kernel_compute_transformers_model(model, monkeypatch):  # noqa: F811
    fused = copy.deepcopy(model)
    install_routing(fused)  # as the engine: the experts' gate is then called by the routing
    assert fused_mlp.fuse_mlps(fused, torch.device("cpu")) == 5  # two encoder and two decoder layers, self-conditioning
    decoder, encoder = fused.model.decoder.layers[0].mlp, fused.model.encoder.language_model.layers[0].mlp
    assert decoder.gate_up_proj is encoder.gate_up_proj  # tied weights stay one stacked weight
    assert not hasattr(decoder, "gate_proj") and decoder.gate_up_proj.weight.shape == (256, 96)
    calls = []
    monkeypatch.setattr(expert_routing, "use_kernels", lambda device: True)  # as on a GPU
    monkeypatch.setattr(fused_mlp, "gelu_tanh_mul", lambda x, kernel=fused_mlp.gelu_tanh_mul: calls.append(x.shape[-1]) or kernel(x))
    expected_logits, expected, _ = run(model)
    logits, got, _ = run(fused)
    # each layer's experts (2 x 32) and dense MLP (2 x 128), prefill and decoder, and the self-conditioning (2 x 128)
    assert sorted(calls) == [64] * 4 + [256] * 5
    for ours, theirs in zip(got, expected):
        torch.testing.assert_close(ours, theirs, rtol=2e-5, atol=2e-5)
    torch.testing.assert_close(logits, expected_logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mode", ["int8", "int4", "fp8"])
def test_stacked_quantized_linears_compute_both(mode):
    """The stacked codes and scales give each half's own output, bit for bit (through the Triton kernel,
    here under its interpreter)."""
    generator = torch.Generator().manual_seed(2)
    gate, up = (QuantizedLinear.quantize(nn.Linear(256, 96, bias=False), mode) for _ in range(2))
    x = torch.randn(4, 7, 256, generator=generator)
    both = QuantizedLinear.stacked(gate, up)
    assert (both.in_features, both.out_features) == (256, 192)
    assert torch.equal(both(x), torch.cat([gate(x), up(x)], dim=-1))


def test_an_mlp_under_a_lora_keeps_its_own_products(model):  # noqa: F811
    """The decoder's gate under a LoRA, its tied encoder twin without: the twin is stacked, and the
    decoder's MLP keeps its gate, LoRA included (it was handed the twin's stacked product, matched by
    the base weight's address, and its LoRA silently dropped)."""
    from peft import LoraConfig, inject_adapter_in_model

    with_lora = copy.deepcopy(model)
    inject_adapter_in_model(LoraConfig(r=2, target_modules=["gate_proj"], init_lora_weights=False), with_lora.model.decoder.layers[0].mlp)
    fused = copy.deepcopy(with_lora)
    assert fused_mlp.fuse_mlps(fused, torch.device("cpu")) == 4  # all but the decoder layer's MLP under the LoRA
    decoder = fused.model.decoder.layers[0].mlp
    assert hasattr(decoder, "gate_proj") and not hasattr(decoder, "gate_up_proj")
    assert hasattr(fused.model.encoder.language_model.layers[0].mlp, "gate_up_proj")
    x = torch.randn(5, 96, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        torch.testing.assert_close(decoder(x), with_lora.model.decoder.layers[0].mlp(x))
        assert not torch.allclose(decoder(x), model.model.decoder.layers[0].mlp(x))  # the LoRA counts


def test_linears_of_another_kind_are_left_alone():
    with pytest.raises(ValueError):
        QuantizedLinear.stacked(QuantizedLinear.quantize(nn.Linear(256, 96, bias=False), "int8"),
                                QuantizedLinear.quantize(nn.Linear(256, 96, bias=False), "int4"))
    assert stack_linears([nn.Linear(64, 32, bias=True), nn.Linear(64, 32, bias=True)]) is None
    assert stack_linears([nn.Linear(64, 32, bias=False), nn.Linear(64, 32, bias=False).double()]) is None
