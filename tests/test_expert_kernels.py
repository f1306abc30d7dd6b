"""The grouped GEMMs that read quantized weights in the kernel, checked on the CPU.

The Triton kernel runs under Triton's interpreter (`TRITON_INTERPRET=1`), which executes the same
kernel source on CPU tensors; it is compared with the portable dequantize-then-matmul path, in
float32 (the interpreter's bfloat16 arithmetic is not the GPU's, so bf16 is checked on the GPU by
benchmarks/gpu_real_shape.py). torch's fp8 grouped GEMM is CUDA-only: here its arguments are checked
against torch's own shape/stride rules on the meta device. Which product runs on which GPU is
decided from its compute capability, checked here with the capability given.
"""

from __future__ import annotations

import pytest
import torch
from transformers import DiffusionGemmaConfig
from transformers.models.diffusion_gemma.modeling_diffusion_gemma import DiffusionGemmaRMSNorm, DiffusionGemmaTextExperts

from app.engine.diffusion import expert_kernels, expert_routing
from app.engine.diffusion.fused_norm import rms_norm
from app.engine.diffusion.quantization import QuantizedExperts, QuantizedLinear, QuantizedWeight

pytest.importorskip("triton", reason="Triton is installed with the test extras")


@pytest.fixture
def interpreter():
    """tests/conftest.py sets TRITON_INTERPRET=1 before Triton is imported (it reads it then)."""
    assert expert_kernels.interpreting()
    return expert_kernels


def reference(x: torch.Tensor, weight: torch.Tensor, counts: list[int]) -> torch.Tensor:
    out, start = torch.zeros(x.shape[0], weight.shape[1]), 0
    for expert, count in enumerate(counts):
        out[start : start + count] = x[start : start + count] @ weight[expert].T
        start += count
    return out


@pytest.mark.parametrize("mode", ["int8", "int4", "fp8"])  # fp8: the Triton kernel of GPUs without torch's fp8 grouped GEMM
@pytest.mark.parametrize("shape", [(4, 96, 128), (3, 48, 704)])  # 704: the real model's expert width (int4 groups of 64)
def test_triton_grouped_gemm_matches_dequantized_weights(interpreter, mode, shape):
    generator = torch.Generator().manual_seed(sum(shape))
    weight = torch.randn(shape, generator=generator)
    q = QuantizedWeight.quantize(weight, mode)
    counts = [5, 0, 37, 3][: shape[0]]  # an expert with no rows, one spanning several M tiles (16 or 32 rows)
    ends = torch.cumsum(torch.tensor(counts), 0).to(torch.int32)
    x = torch.randn(sum(counts) + 3, shape[2], generator=generator)  # 3 rows past the last expert
    assert q.kernel(torch.device("cpu")) == "triton"
    out = q.grouped_mm(x, ends, "triton")[: sum(counts)]  # rows past the last expert: unwritten, as torch._grouped_mm leaves them
    expected = reference(x, q.dequantize(torch.float32), counts)[: sum(counts)]
    assert torch.isfinite(out).all()
    assert float((out - expected).norm() / expected.norm()) < 1e-5


def test_int4_nibbles_unpacked_by_float_bits_give_the_same_products(interpreter):
    """The two int4 unpackings (bit operations, the experts' default, and an integer conversion, a
    plain matrix's) must feed the same weights to the products: the results are equal bit for bit,
    dense and grouped.
    (float32: the interpreter's bfloat16 products are not numbers the GPU would give.)"""
    generator = torch.Generator().manual_seed(11)
    q = QuantizedWeight.quantize(torch.randn(3, 48, 256, generator=generator), "int4")
    ends = torch.tensor([20, 20, 70], dtype=torch.int32)
    x = torch.randn(70, 256, generator=generator)
    for shape, codes, scale in [(q.shape, q.codes, q.scale), (q.shape[1:], q.codes[2], q.scale[2])]:
        group_ends = ends if len(shape) == 3 else None  # a plain matrix: every row
        plain = interpreter.dequant_grouped_mm(x, codes, scale, group_ends, "int4", shape, {"block_m": 32, "float_bits": False})
        by_bits = interpreter.dequant_grouped_mm(x, codes, scale, group_ends, "int4", shape, {"block_m": 32, "float_bits": True})
        assert plain.abs().sum() > 0 and torch.equal(plain, by_bits)


@pytest.mark.parametrize("block_m", [16, 32])
def test_each_tile_finds_its_expert_and_rows(interpreter, block_m):
    """The kernel's programs work out their expert and first row from the experts' row ends: with
    empty experts at the start, in the middle and at the end, an expert of exactly one tile, one of
    one row and one over several tiles, every row gets its own expert's product and nothing else."""
    counts = [0, 17, 16, 1, 0, 40, 0]
    generator = torch.Generator().manual_seed(12)
    q = QuantizedWeight.quantize(torch.randn(len(counts), 24, 64, generator=generator), "int8")
    ends = torch.cumsum(torch.tensor(counts), 0).to(torch.int32)
    x = torch.randn(sum(counts), 64, generator=generator)
    out = interpreter.dequant_grouped_mm(x, q.codes, q.scale, ends, "int8", q.shape, {"block_m": block_m})
    expected = reference(x, q.dequantize(torch.float32), counts)
    assert float((out - expected).norm() / expected.norm()) < 1e-5


def tiny_experts(experts: int = 4, top_k: int = 2) -> DiffusionGemmaTextExperts:
    """An experts module of hidden size 64 on transformers' `grouped_mm` path, random weights."""
    config = DiffusionGemmaConfig(
        text_config=dict(hidden_size=64, num_experts=experts, top_k_experts=top_k, moe_intermediate_size=32, num_hidden_layers=1)
    ).text_config
    config._experts_implementation = "grouped_mm"
    experts = DiffusionGemmaTextExperts(config)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        experts.gate_up_proj.copy_(torch.randn(experts.gate_up_proj.shape, generator=generator) * 0.2)
        experts.down_proj.copy_(torch.randn(experts.down_proj.shape, generator=generator) * 0.2)
    return experts


@pytest.mark.parametrize("mode", ["int8", "int4", "fp8"])  # fp8: the Triton kernel of GPUs without torch's fp8 grouped GEMM
def test_quantized_experts_through_the_kernel_match_the_portable_path(interpreter, monkeypatch, mode):
    experts = QuantizedExperts(tiny_experts(), mode)
    generator = torch.Generator().manual_seed(4)
    hidden = torch.randn(24, 64, generator=generator)
    top_k_index = torch.randint(0, 4, (24, 2), generator=generator)
    top_k_weights = torch.rand(24, 2, generator=generator)
    fast = experts(hidden, top_k_index, top_k_weights)
    monkeypatch.setattr(interpreter, "triton_usable", lambda device: False)
    assert experts.gate_up.kernel(hidden.device) == "dequantize"
    portable = experts(hidden, top_k_index, top_k_weights)
    assert float((fast - portable).norm() / portable.norm()) < 1e-5


@pytest.mark.parametrize("mode", ["int8", "int4", "fp8"])  # fp8: the Triton kernel of GPUs without torch's fp8 grouped GEMM
def test_the_routed_epilogue_gives_the_unrouted_products_bits(interpreter, mode):
    """The experts' last product writes each row, weighted, to its routed slot in the kernel; before,
    a product, a gather of the weights, a multiply and a scatter did it (and the rows were sorted by
    int64 ids, not bytes). The result must be the same bit for bit, experts spanning tiles included.
    In float32 here (the interpreter's bfloat16 products are not the GPU's numbers); in bfloat16,
    where the epilogue rounds before weighting, benchmarks/gpu_diagnose.py checks it on the GPU."""
    dtype = torch.float32
    experts = QuantizedExperts(tiny_experts(), mode)
    generator = torch.Generator().manual_seed(5)
    tokens, top_k = 80, 2  # 160 rows over 4 experts: some take two 32-row tiles
    hidden = torch.randn(tokens, 64, generator=generator).to(dtype)
    top_k_index = torch.randint(0, 4, (tokens, top_k), generator=generator)
    top_k_weights = torch.rand(tokens, top_k, generator=generator)  # float32, as transformers' router gives them
    fused = experts(hidden, top_k_index, top_k_weights)

    expert_ids, order = torch.sort(top_k_index.reshape(-1))
    rows = hidden[order // top_k]
    ends = torch.cumsum(torch.bincount(expert_ids, minlength=4), 0).to(torch.int32)
    gated = experts.experts._apply_gate(experts.gate_up.grouped_mm(rows, ends, "triton"))
    out = experts.down.grouped_mm(gated, ends, "triton") * top_k_weights.reshape(-1)[order].unsqueeze(-1)
    unsorted = torch.empty_like(out)
    unsorted[order] = out
    expected = unsorted.view(tokens, top_k, -1).sum(dim=1).to(dtype)
    assert fused.dtype == dtype and torch.isfinite(expected).all()
    assert torch.equal(fused, expected)


@pytest.mark.parametrize("mode", ["int8", "int4", "fp8"])  # fp8: the Triton kernel of GPUs without torch's fp8 grouped GEMM
def test_quantized_linear_through_the_kernel_matches_the_portable_path(interpreter, monkeypatch, mode):
    """A linear layer takes the kernel's dense tiles (rows in order, no expert to find): every row written, none twice."""
    linear = torch.nn.Linear(128, 80, bias=True)
    layer = QuantizedLinear.quantize(linear, mode)
    x = torch.randn(2, 40, 128)  # 80 rows: a linear's taller M tiles, one of them partly filled
    with torch.no_grad():
        fast = layer(x)
        monkeypatch.setattr(interpreter, "triton_usable", lambda device: False)
        portable = layer(x)
    assert fast.shape == (2, 40, 80)
    assert float((fast - portable).norm() / portable.norm()) < 1e-5


def test_unquantized_experts_through_the_kernel_match_transformers(interpreter, monkeypatch):
    """bf16 experts on GPUs where torch's grouped GEMM loops over the experts after a host sync (A100,
    RTX 30xx-50xx) run the Triton kernel on their plain weights, the down product weighing and putting
    back each row in its epilogue: the same products as transformers' experts (float32 here)."""
    experts = tiny_experts()
    generator = torch.Generator().manual_seed(6)
    hidden = torch.randn(40, 64, generator=generator)
    top_k_index = torch.randint(0, 4, (40, 2), generator=generator)
    top_k_weights = torch.rand(40, 2, generator=generator)
    with torch.no_grad():
        expected = experts(hidden, top_k_index, top_k_weights)
        assert expert_routing.install_routing(experts) == 1
        monkeypatch.setattr(interpreter, "float_grouped_wanted", lambda weight: True)
        rows = experts.routed_rows(hidden, top_k_index, top_k_weights)
        out = experts(hidden, top_k_index, top_k_weights)
    assert isinstance(rows, torch.Tensor) and rows.shape == (40, 2, 64) and rows.dtype == torch.float32  # weighted in the epilogue
    assert float((out - expected).norm() / expected.norm()) < 1e-5


class Gpu:
    """A CUDA device of a given compute capability, as far as the kernel choice asks (no GPU needed)."""

    def __init__(self, monkeypatch, capability: tuple[int, int]) -> None:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        self.device = torch.device("cuda")


@pytest.mark.parametrize(
    ("capability", "fp8_kernel", "bf16_experts"),
    [((8, 0), "dequantize", "triton"),  # A100: no fp8 at all (and `fp8` is refused there, quantization.choose_quantization)
     ((8, 6), "dequantize", "triton"),  # RTX 30xx
     ((8, 9), "triton", "triton"),  # RTX 40xx, L40S: fp8 in Triton, torch has no fp8 grouped GEMM
     ((9, 0), "fp8", "triton"),  # H100/H200: torch's fp8, Triton's bf16 experts: each the faster there
     ((10, 0), "triton", "torch"),  # B200: torch's bf16 grouped GEMM, no row-wise fp8 grouped one
     ((12, 0), "triton", "triton")],  # RTX 50xx: neither of torch's (it raised for fp8 before)
)
def test_each_gpu_gets_a_product_it_has_a_kernel_for(monkeypatch, capability, fp8_kernel, bf16_experts):
    gpu = Gpu(monkeypatch, capability)
    fp8 = QuantizedWeight.quantize(torch.randn(4, 64, 128), "fp8")
    assert fp8.kernel(gpu.device) == fp8_kernel
    assert QuantizedWeight.quantize(torch.randn(4, 64, 128), "int8").kernel(gpu.device) == "triton"
    assert expert_kernels.torch_runs_bf16_experts(gpu.device) == (bf16_experts == "torch")
    assert expert_kernels.float_grouped_wanted(BfloatWeight(gpu.device)) == (bf16_experts == "triton")


class BfloatWeight:
    """A bf16 weight's dtype, device and shape: all `float_grouped_wanted` reads (a tensor would need the GPU)."""

    def __init__(self, device: torch.device, shape: tuple[int, ...] = (128, 1408, 2816)) -> None:
        self.dtype, self.device, self.shape = torch.bfloat16, device, shape


def test_experts_no_triton_tile_fits_keep_torchs_product(monkeypatch):
    """Inputs not a multiple of 16 have no K tile: torch's product, not an error mid-forward."""
    gpu = Gpu(monkeypatch, (8, 6))
    assert expert_kernels.float_grouped_wanted(BfloatWeight(gpu.device))
    assert not expert_kernels.float_grouped_wanted(BfloatWeight(gpu.device, (4, 64, 100)))


def test_fp8_grouped_gemm_arguments_satisfy_torch_rules():
    """On the meta device torch runs the same checks as its CUDA kernel (layouts, scale shapes, dtypes)."""
    weight = QuantizedWeight.quantize(torch.randn(4, 1408, 2816), "fp8")
    codes, scale = weight.codes.to("meta"), weight.scale.to("meta")
    x = torch.empty(2048, 2816, dtype=torch.bfloat16, device="meta")
    ends = torch.empty(4, dtype=torch.int32, device="meta")
    out = expert_kernels.fp8_grouped_mm(x, codes, scale, ends)
    assert out.shape == (2048, 1408) and out.dtype == torch.bfloat16


@pytest.mark.parametrize("scaled", [True, False])
def test_fused_rms_norm_matches_transformers(interpreter, scaled):
    norm = DiffusionGemmaRMSNorm(96, eps=1e-6, with_scale=scaled)
    if scaled:
        norm.weight.data = torch.randn(96, generator=torch.Generator().manual_seed(5))
    x = torch.randn(3, 5, 96, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        torch.testing.assert_close(rms_norm(norm, x), norm(x), rtol=1e-5, atol=1e-5)


def test_norms_left_to_the_compiler_keep_transformers_forward(interpreter):
    from app.engine.diffusion.fused_norm import fuse_norms

    model = torch.nn.ModuleDict({"prefill": DiffusionGemmaRMSNorm(96), "compiled": torch.nn.ModuleList([DiffusionGemmaRMSNorm(96)])})
    assert fuse_norms(model, torch.device("cpu"), leave=model["compiled"]) == 1
    assert "forward" in vars(model["prefill"]) and "forward" not in vars(model["compiled"][0])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_fp8_row_quantization_is_the_plain_amax_scaling_bit_for_bit(dtype):
    """The few-kernel form of the activations' fp8 quantization against its definition: per row,
    scale = max|x| / 448 in float32, codes = x / scale rounded to float8_e4m3fn (zero rows too)."""
    generator = torch.Generator().manual_seed(5)
    x = (torch.randn(64, 704, generator=generator) * torch.logspace(-4, 4, 64)[:, None]).to(dtype)
    x[3] = 0
    codes, scale = expert_kernels.quantize_rows_fp8(x)
    expected_scale = x.float().abs().amax(dim=-1).clamp(min=1e-12) / 448.0
    expected = (x.float() / expected_scale[:, None]).to(torch.float8_e4m3fn)
    assert scale.dtype == torch.float32 and torch.equal(scale, expected_scale)
    assert torch.equal(codes.view(torch.uint8), expected.view(torch.uint8))


def test_fp8_row_quantization_kernel_computes_the_definitions_quotients(interpreter):
    """The one-kernel fp8 quantization a GPU runs (`_quantize_rows_fp8_kernel`), under the
    interpreter, writing float32 instead of fp8 (the interpreter's fp8 rounding is not the GPU's,
    which rounds to nearest as torch does): the scales and the quotients it rounds are the
    definition's bit for bit (IEEE divisions), so its fp8 codes are the four-kernel form's. Its
    build for sm_90 is checked by tests/test_triton_targets.py."""
    generator = torch.Generator().manual_seed(7)
    for width in (704, 100):
        x = (torch.randn(3, 9, width, generator=generator) * torch.logspace(-4, 4, 9)[:, None]).to(torch.bfloat16)
        x[1, 4] = 0
        quotients, scale = interpreter.quantize_rows_fp8_into(x, torch.empty(x.shape, dtype=torch.float32))
        codes, expected_scale = interpreter.quantize_rows_fp8(x)  # the torch form, on the CPU
        assert scale.shape == (3, 9) and torch.equal(scale, expected_scale)
        assert torch.equal(quotients, x.float() / expected_scale.unsqueeze(-1))
        assert torch.equal(quotients.to(torch.float8_e4m3fn).view(torch.uint8), codes.view(torch.uint8))


def test_fp8_row_quantization_compiles_in_one_graph(tmp_path, monkeypatch):
    """With compiled layers an fp8 decoder layer is compiled whole (`fullgraph=True`): the
    quantization's fp8 store (`div(..., out=)`) must trace without a break and give the same bits."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    x = torch.randn(64, 704, generator=torch.Generator().manual_seed(6)).to(torch.bfloat16)
    compiled = torch.compile(expert_kernels.quantize_rows_fp8, fullgraph=True)
    (codes, scale), (expected_codes, expected_scale) = compiled(x), expert_kernels.quantize_rows_fp8(x)
    assert torch.equal(scale, expected_scale)
    assert torch.equal(codes.view(torch.uint8), expected_codes.view(torch.uint8))
