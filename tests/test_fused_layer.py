"""The text layer with its norms, residual additions and routing fused (app/engine/diffusion/fused_layer.py),
under Triton's interpreter against transformers' own forward, in float32 (the interpreter's bf16
arithmetic is not the GPU's; on a GPU, benchmarks/gpu_real_shape.py compares graphs with eager and
compiled layers with eager, layer by layer).

The model is a small DiffusionGemma with the real layer structure (sliding and full attention,
experts beside the dense MLP), a hidden size that is not a power of two (the kernels mask the
rest of their block), and norm weights, router scales and layer scalars drawn at random, so a
kernel that dropped or swapped any of them would show."""

from __future__ import annotations

import copy
import types

import pytest
import torch
from transformers import DiffusionGemmaForBlockDiffusion
from transformers.cache_utils import DynamicCache

from app.engine.diffusion import expert_kernels, fused_layer
from app.engine.diffusion.expert_routing import install_routing
from app.engine.diffusion.fused_norm import fuse_norms
from app.engine.diffusion.tiny import small_backbone_config

pytest.importorskip("triton", reason="Triton is installed with the test extras")


@pytest.fixture(scope="module")
def model() -> DiffusionGemmaForBlockDiffusion:
    return layered_model()


def layered_model(sliding_window: int = 256) -> DiffusionGemmaForBlockDiffusion:
    """The module docstring's model; a `sliding_window` shorter than a prompt makes its sliding layer's
    cache keep only the last `sliding_window - 1` tokens."""
    text = dict(vocab_size=512, hidden_size=96, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                num_key_value_heads=1, head_dim=32, global_head_dim=32, num_global_key_value_heads=1, num_experts=16,
                top_k_experts=4, moe_intermediate_size=32, sliding_window=sliding_window,
                layer_types=["sliding_attention", "full_attention"], initializer_range=0.3)
    torch.manual_seed(0)
    model = DiffusionGemmaForBlockDiffusion(small_backbone_config(text, canvas_length=16, initializer_range=0.3)).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("layernorm.weight", "layernorm_1.weight", "layernorm_2.weight", "router.scale", "per_expert_scale")):
                param.copy_(torch.rand_like(param) * 1.5 + 0.25)
        for layer in [*model.model.decoder.layers, *model.model.encoder.language_model.layers]:
            layer.layer_scalar.fill_(0.75)
    return model


def run(model: DiffusionGemmaForBlockDiffusion) -> tuple[torch.Tensor, list, list]:
    """One prefill of a prompt and one decoder forward; every layer's output and routing, and the logits."""
    outputs, routes, hooks = [], [], []
    for layer in [*model.model.encoder.language_model.layers, *model.model.decoder.layers]:
        hooks.append(layer.register_forward_hook(lambda module, args, out: outputs.append(out)))
        hooks.append(layer.experts.register_forward_pre_hook(lambda module, args: routes.append((args[1], args[2]))))
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 512, (2, 9), generator=generator)
    canvas = torch.randint(3, 512, (2, 16), generator=generator)
    try:
        with torch.inference_mode():
            logits = model(input_ids=ids, decoder_input_ids=canvas, cache=DynamicCache(config=model.config.get_text_config(decoder=True))).logits
    finally:
        for hook in hooks:
            hook.remove()
    return logits, outputs, routes


@pytest.mark.parametrize("routing", [False, True])
def test_fused_layers_compute_transformers_layers(model, monkeypatch, routing):
    """With transformers' experts (which sum their top-k rows) and with the engine's routing (whose
    rows the fused layer's last kernel sums)."""
    fused = copy.deepcopy(model)
    assert fuse_norms(fused, torch.device("cpu")) > 0
    assert fused_layer.fuse_layers(fused, torch.device("cpu")) == 4  # two encoder and two decoder layers
    if routing:
        assert install_routing(fused) == 4
    ends = []
    monkeypatch.setattr(fused_layer, "layer_end", lambda layer, dense, experts, mid, rows=False, end=fused_layer.layer_end, **kwargs:
                        ends.append(rows) or end(layer, dense, experts, mid, rows=rows, **kwargs))
    expected_logits, expected, expected_routes = run(model)
    logits, got, routes = run(fused)
    assert ends == [routing] * 4
    assert len(got) == len(expected) == 4
    for ours, theirs in zip(got, expected):
        torch.testing.assert_close(ours, theirs, rtol=2e-5, atol=2e-5)
    for (index, weights), (expected_index, expected_weights) in zip(routes, expected_routes):
        assert torch.equal(index, expected_index)  # the same experts, in the same order
        torch.testing.assert_close(weights, expected_weights, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(logits, expected_logits, rtol=1e-4, atol=1e-4)


def test_the_fused_router_chooses_transformers_experts_and_weights(model):
    router = model.model.decoder.layers[0].router
    scores = torch.randn(300, 16, generator=torch.Generator().manual_seed(4)) * 3
    weights, index = fused_layer.route(router, scores)
    expected_probs = torch.softmax(scores, dim=-1)
    top, expected_index = torch.topk(expected_probs, 4, dim=-1)
    expected_weights = top / top.sum(dim=-1, keepdim=True) * router.per_expert_scale[expected_index]
    assert index.dtype == torch.int64 and torch.equal(index, expected_index)
    torch.testing.assert_close(weights, expected_weights, rtol=1e-6, atol=1e-7)


def test_a_nan_score_routes_to_real_experts(model):
    """One NaN score (an overflow upstream) makes the token's probabilities NaN: the fused router
    still names real experts, as torch.topk does (it ranks NaN first), and carries the NaN into the
    weights as transformers' router would; before, it gave expert 16 of 16, and the experts' sort,
    gather and sum read and wrote past their tensors on a GPU. The other tokens are untouched."""
    router = model.model.decoder.layers[0].router
    scores = torch.randn(6, 16, generator=torch.Generator().manual_seed(9))
    scores[2, 5] = float("nan")
    weights, index = fused_layer.route(router, scores)
    assert int(index.min()) >= 0 and int(index.max()) < 16
    assert torch.equal(index[2], torch.arange(4)) and torch.isnan(weights[2]).all()  # all NaN: the lowest ids (torch.topk picks NaNs in an order of its own)
    expected_weights, expected_index = fused_layer.route(router, scores[[0, 1, 3, 4, 5]])
    assert torch.equal(index[[0, 1, 3, 4, 5]], expected_index) and torch.equal(weights[[0, 1, 3, 4, 5]], expected_weights)


def test_layers_that_do_not_fit_or_are_compiled_keep_transformers_forward(model):
    fused = copy.deepcopy(model)
    fused.model.decoder.layers[0].pre_feedforward_layernorm_2.eps = 1e-5  # another epsilon than its neighbours
    assert fused_layer.fuse_layers(fused, torch.device("cpu"), leave=fused.model.decoder.layers[1]) == 2  # the encoder's
    assert "forward" not in vars(fused.model.decoder.layers[0]) and "forward" not in vars(fused.model.decoder.layers[1])


@pytest.mark.parametrize("mode", [None, "int8", "triton-experts"])
def test_everything_a_gpu_fuses_computes_transformers_model(model, monkeypatch, mode):
    """The engine's GPU path at once (norms, layers, attention heads with stacked projections, MLPs
    with stacked gate and up, the experts' routing with its kernels), prefill and decoder, against
    transformers' own; int8: the same model quantized, against itself unfused (its stacked codes, and
    its experts' rows from the Triton kernel's epilogue summed by the layer's end); triton-experts:
    unquantized experts through the Triton kernel, as on GPUs where torch's grouped GEMM has none."""
    from app.engine.diffusion import expert_routing
    from app.engine.diffusion.fused_attention import fuse_attention
    from app.engine.diffusion.fused_mlp import fuse_mlps
    from app.engine.diffusion.quantization import quantize_backbone

    if mode == "triton-experts":
        monkeypatch.setattr(expert_kernels, "float_grouped_wanted", lambda weight: True)
    elif mode is not None:
        model = copy.deepcopy(model)
        quantize_backbone(model, mode, torch.device("cpu"))
    fused = copy.deepcopy(model)
    install_routing(fused)
    cpu = torch.device("cpu")
    assert fuse_norms(fused, cpu) and fused_layer.fuse_layers(fused, cpu) and fuse_attention(fused, cpu) and fuse_mlps(fused, cpu)
    monkeypatch.setattr(expert_routing, "use_kernels", lambda device: True)  # the routing's and the gate's kernels, as on a GPU
    launches = []
    monkeypatch.setattr(expert_kernels, "dequant_grouped_mm", lambda *args, real=expert_kernels.dequant_grouped_mm, **kwargs:
                        launches.append(args[4]) or real(*args, **kwargs))
    expected_logits, expected, _ = run(model)
    logits, got, _ = run(fused)
    assert set(launches) == {None: set(), "int8": {"int8"}, "triton-experts": {"float"}}[mode]
    for ours, theirs in zip(got, expected):
        torch.testing.assert_close(ours, theirs, rtol=3e-5, atol=3e-5)
    torch.testing.assert_close(logits, expected_logits, rtol=1e-4, atol=1e-4)


def gpu_top_k_sum(rows: torch.Tensor) -> torch.Tensor:
    """torch.sum over a token's top-k rows as a CUDA GPU adds them (ATen's Reduce.cuh: one thread an
    output, four accumulators, row j into j % 4, then the four in order), here in float32 on the CPU."""
    partial = [torch.zeros_like(rows[:, 0]) for _ in range(4)]
    for j in range(rows.shape[1]):
        partial[j % 4] = partial[j % 4] + rows[:, j]
    return ((partial[0] + partial[1]) + partial[2]) + partial[3]


def test_the_layer_end_sums_the_top_8_rows_in_the_gpus_order(model):
    """The real model's 8 rows a token, summed by the last kernel as the GPU's torch.sum sums them:
    the same bits as the kernel given that sum. Summed in order instead, some rows round otherwise
    (so the order is what this test checks)."""
    layer = model.model.decoder.layers[0]
    generator = torch.Generator().manual_seed(5)
    rows = torch.randn(64, 8, 96, generator=generator) * torch.rand(64, 8, 1, generator=generator) * 3
    dense, mid = torch.randn(64, 96, generator=generator), torch.randn(64, 96, generator=generator) * 4
    fused = fused_layer.layer_end(layer, dense, rows, mid, rows=True)
    assert torch.equal(fused, fused_layer.layer_end(layer, dense, gpu_top_k_sum(rows), mid))
    in_order = rows[:, 0]
    for j in range(1, 8):
        in_order = in_order + rows[:, j]
    assert not torch.equal(gpu_top_k_sum(rows), in_order)
    torch.testing.assert_close(fused, fused_layer.layer_end(layer, dense, rows.sum(dim=1), mid), rtol=1e-5, atol=1e-5)


def test_the_layer_end_weighs_rows_where_the_experts_left_them(model):
    """bf16/fp8 experts hand over their down product's rows in expert order with where each token's
    rows sit and their weights (`SortedRows`): the layer's end gives what it gives for the same rows
    weighed in token order, bit for bit."""
    from app.engine.diffusion.expert_routing import SortedRows

    layer = model.model.decoder.layers[0]
    generator = torch.Generator().manual_seed(6)
    rows = SortedRows(torch.randn(64 * 8, 96, generator=generator), torch.randperm(64 * 8, generator=generator),
                      torch.rand(64 * 8, generator=generator), top_k=8)
    dense, mid = torch.randn(64, 96, generator=generator), torch.randn(64, 96, generator=generator) * 4
    assert torch.equal(fused_layer.layer_end(layer, dense, rows, mid, rows=True),
                       fused_layer.layer_end(layer, dense, rows.weighted(), mid, rows=True))


def test_the_norm_after_each_layer_is_computed_by_its_last_kernel_bit_for_bit(model, monkeypatch):
    """The following layer's input norm, and after the last layer the model's final norm, come from
    the layer's last kernel (one kernel fewer a layer): the same bits as the fused norm's own kernel."""
    from app.engine.diffusion import fused_norm

    linked = copy.deepcopy(model)
    fuse_norms(linked, torch.device("cpu"))
    assert fused_layer.fuse_layers(linked, torch.device("cpu")) == 4
    unlinked = copy.deepcopy(linked)
    for layer in [*unlinked.model.decoder.layers, *unlinked.model.encoder.language_model.layers]:
        layer.forward = types.MethodType(fused_layer.fused_forward, layer)  # no following norm
    launched = []
    kernel = fused_norm._rms_norm_kernel
    monkeypatch.setattr(fused_norm, "_rms_norm_kernel", type("Counted", (), {"__getitem__": lambda self, grid: launched.append(grid) or kernel[grid]})())
    logits, got, _ = run(linked)
    ahead = len(launched)
    expected_logits, expected, _ = run(unlinked)
    assert len(launched) - ahead - ahead == 2 * 2  # per stack (encoder, decoder): one layer's input norm and the last norm
    assert all(torch.equal(ours, theirs) for ours, theirs in zip(got, expected)) and torch.equal(logits, expected_logits)
