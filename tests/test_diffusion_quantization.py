"""Weight-only quantization (experts included) on the CPU, the auto choice, and out-of-memory errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from app.engine import EngineSpec, load_engine
from app.engine.diffusion.quantization import (
    QuantizedExperts,
    QuantizedLinear,
    QuantizedWeight,
    choose_quantization,
    estimate_bytes,
)
from app.errors import UserError
from benchmarks.gpu_real_shape import real_backbone_config
from tests.test_diffusion_engine import tiny_checkpoint, tone

GIB = 2**30


@pytest.fixture(scope="module")
def adapter(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory)


@pytest.fixture(scope="module")
def engines(adapter):
    """Engines by quantization, each loaded once for the module."""
    loaded = {}

    def get(quantization: str):
        if quantization not in loaded:
            spec = EngineSpec(engine="diffusion", model=str(adapter), device="cpu", quantization=quantization)
            loaded[quantization] = load_engine(spec)
        return loaded[quantization]

    return get


@pytest.mark.parametrize(("mode", "max_error"), [("int8", 0.01), ("fp8", 0.04), ("int4", 0.12)])
def test_quantized_weight_round_trip(mode, max_error):
    weight = torch.randn(4, 96, 256)  # (experts, out, in), like a fused expert tensor
    q = QuantizedWeight.quantize(weight, mode)
    restored = q.dequantize(torch.float32)
    assert restored.shape == weight.shape
    assert float((restored - weight).norm() / weight.norm()) < max_error
    stored = q.codes.numel() * q.codes.element_size()
    assert stored == weight.numel() // (2 if mode == "int4" else 1)


def first_step_logits(engine) -> torch.Tensor:
    captured = []
    handle = engine.model.backbone.lm_head.register_forward_hook(lambda module, args, out: captured.append(out))
    try:
        engine.transcribe(tone(), language="en", steps=1, early_exit=False, seed=5)
    finally:
        handle.remove()
    return captured[0].flatten()


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_quantized_engine_runs_on_cpu_with_experts_quantized(engines, mode):
    engine = engines(mode)
    backbone = engine.model.backbone
    for decoder_layer, encoder_layer in zip(backbone.model.decoder.layers, backbone.model.encoder.language_model.layers):
        assert isinstance(decoder_layer.experts, QuantizedExperts)
        assert decoder_layer.experts is encoder_layer.experts  # tied weights stay shared
        assert isinstance(decoder_layer.mlp.up_proj, QuantizedLinear)
        assert isinstance(decoder_layer.self_attn.q_proj, QuantizedLinear)  # the decoder's LoRA merged in
        assert encoder_layer.self_attn.q_proj.base_layer is decoder_layer.self_attn.q_proj  # tied, under the encoder's LoRA
        assert type(decoder_layer.router.proj) is nn.Linear
        assert decoder_layer.experts.gate_up.codes.dtype == (torch.int8 if mode == "int8" else torch.uint8)
    assert not any(".experts.gate_up_proj" in name for name, _ in backbone.named_parameters())
    result = engine.transcribe(tone(), language="en", steps=3, early_exit=False)
    assert result.steps_used == 3 and engine.quantization == mode


def test_int8_logits_stay_close_to_fp32(engines):
    reference = first_step_logits(engines("fp32"))
    quantized = first_step_logits(engines("int8"))
    similarity = torch.nn.functional.cosine_similarity(reference, quantized, dim=0)
    assert float(similarity) > 0.99


def test_auto_is_fp32_on_cpu_and_unknown_modes_are_refused():
    config = real_backbone_config()
    assert choose_quantization("auto", torch.device("cpu"), config) == "fp32"
    assert choose_quantization("int4", torch.device("cpu"), config) == "int4"
    with pytest.raises(UserError) as err:
        choose_quantization("nf4", torch.device("cpu"), config)
    assert err.value.code == "bad_quantization"


def test_memory_estimates_for_the_real_model_count_the_experts():
    config = real_backbone_config()
    bf16, int8, int4 = (estimate_bytes(config, mode) / GIB for mode in ("bf16", "int8", "int4"))
    assert 46 < bf16 < 56  # ~25B parameters in bf16, plus the reserve
    assert 25 < int8 < 32
    assert 13 < int4 < 20  # only reachable because the 3-D expert weights are quantized too


def test_gpu_out_of_memory_becomes_a_user_error(engines):
    engine = engines("fp32")

    def run_out_of_memory(module, args):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    handle = engine.model.backbone.model.decoder.register_forward_pre_hook(run_out_of_memory)
    try:
        with pytest.raises(UserError) as err:
            engine.transcribe(tone(), language="en", steps=2)
    finally:
        handle.remove()
    assert err.value.code == "out_of_memory" and "int4" in str(err.value)


@pytest.mark.parametrize(
    ("free_gib", "hopper", "expected"),
    [(60, True, "bf16"), (30, True, "fp8"), (30, False, "int8"), (20, True, "int4"), (20, False, "int4")],
)
def test_auto_on_a_gpu_takes_the_fastest_mode_that_fits(monkeypatch, free_gib, hopper, expected):
    """Order measured at the real shape (docs/benchmarks.md): bf16, then fp8 where fp8 tensor cores exist, int8, int4."""
    from app.engine.diffusion import quantization

    monkeypatch.setattr(quantization, "free_gpu_bytes", lambda device: free_gib * GIB)
    monkeypatch.setattr(quantization.kernels, "fp8_grouped_usable", lambda device: hopper)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0) if hopper else (8, 6))
    assert choose_quantization("auto", torch.device("cuda"), real_backbone_config()) == expected


@pytest.mark.parametrize(("free_gib", "hopper", "expected"), [(60, True, "fp8"), (60, False, "bf16"), (20, True, "int4")])
def test_auto_with_compiled_layers_puts_fp8_first(monkeypatch, free_gib, hopper, expected):
    """Compiled, fp8's step is the fastest (H100: 27.7 ms against bf16's 33.5), where its kernels exist."""
    from app.engine.diffusion import quantization

    monkeypatch.setattr(quantization, "free_gpu_bytes", lambda device: free_gib * GIB)
    monkeypatch.setattr(quantization.kernels, "fp8_grouped_usable", lambda device: hopper)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0) if hopper else (8, 6))
    assert choose_quantization("auto", torch.device("cuda"), real_backbone_config(), compiled=True) == expected


@pytest.mark.parametrize(("capability", "expected"), [((9, 0), "fp8"), ((10, 0), "int8"), ((12, 0), "int8"), ((8, 9), "int8")])
def test_auto_takes_fp8_only_where_torch_has_its_fp8_grouped_gemm(monkeypatch, capability, expected):
    """With 30 GiB free an RTX 5090 (12.0) got fp8, whose grouped GEMM torch refuses outside
    compute capability 9.x/10.x (and runs row-wise on 9.x only, by ATen's source): every dictation
    would have failed. fp8 elsewhere
    runs the Triton kernel, never measured; int8 takes the same memory through the measured one."""
    from app.engine.diffusion import quantization

    monkeypatch.setattr(quantization, "free_gpu_bytes", lambda device: 30 * GIB)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert choose_quantization("auto", torch.device("cuda"), real_backbone_config()) == expected


@pytest.mark.parametrize("requested", ["auto", "bf16", "int4"])
def test_a_gpu_without_bfloat16_is_refused_before_loading(monkeypatch, requested):
    """A Titan RTX (Turing, 7.5) has 24 GB, room for int4, but no bf16 products: refused in one sentence."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA TITAN RTX")
    with pytest.raises(UserError) as err:
        choose_quantization(requested, torch.device("cuda"), real_backbone_config())
    assert err.value.code == "bad_device"
    assert "TITAN RTX" in str(err.value) and "cpu" in str(err.value) and "Whisper" in str(err.value)


def test_fp8_on_a_gpu_without_fp8_tensor_cores_is_refused_in_one_sentence(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100-SXM4-80GB")
    with pytest.raises(UserError) as err:
        choose_quantization("fp8", torch.device("cuda"), real_backbone_config())
    assert err.value.code == "bad_quantization"
    assert "A100" in str(err.value) and "bf16, int8 or int4" in str(err.value)
