"""The fused kernels against the operations they replace, on a GPU: same bits, and how much faster.

    python benchmarks/gpu_fused_check.py --out fused.json            # CUDA, bf16, the real shape
    python benchmarks/gpu_fused_check.py --out fused.json --tiny     # the CPU tests: float32 under
                                                                     # Triton's interpreter, small rows

Each kernel of the fused layer (`fused_layer.py`; its last one also with the experts' top-k rows to
sum), the gated GELU (`fused_mlp.py`), the attention heads' norms and rotary embedding
(`fused_attention.py`), the logits' softcap (`softcap.py`), the experts' counting sort
(`expert_routing.py`) and the fp8 row quantization (`expert_kernels.py`) is run beside the composition it replaced on the GPU
(the fused RMSNorm and torch operations, or transformers' own code), on the same random inputs at
the real model's shape (256 canvas rows of 2816, 128 experts top-8, 16 query heads of 256 and 512),
and reports whether the results are equal bit for bit (the router's softmax sums in another order:
its chosen experts' agreement and its weights' largest relative difference instead), and the
milliseconds of each side replayed from a CUDA graph.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from types import SimpleNamespace

if "--tiny" in sys.argv:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # read when Triton is first imported
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from transformers import DiffusionGemmaConfig  # noqa: E402
from transformers.models.diffusion_gemma.modeling_diffusion_gemma import DiffusionGemmaRMSNorm, DiffusionGemmaTextRouter  # noqa: E402
from transformers.models.diffusion_gemma.modeling_diffusion_gemma import apply_rotary_pos_emb as rope  # noqa: E402

from app.engine.diffusion import expert_kernels, expert_routing, fused_attention, fused_layer, fused_mlp, softcap  # noqa: E402
from app.engine.diffusion.fused_norm import rms_norm  # noqa: E402


def bench(fn, device: torch.device) -> float | None:
    """Median milliseconds of `fn` replayed from a CUDA graph; None off a GPU."""
    if device.type != "cuda":
        return None
    import triton.testing

    return triton.testing.do_bench_cudagraph(fn, return_mode="median")


def make_layer(hidden: int, experts: int, top_k: int, dtype: torch.dtype, device: torch.device) -> SimpleNamespace:
    """The parts of a text layer the fused kernels read, with random weights."""
    config = DiffusionGemmaConfig(text_config=dict(hidden_size=hidden, num_experts=experts, top_k_experts=top_k,
                                                   num_hidden_layers=1)).text_config
    names = ("post_attention_layernorm", "pre_feedforward_layernorm", "pre_feedforward_layernorm_2",
             "post_feedforward_layernorm_1", "post_feedforward_layernorm_2", "post_feedforward_layernorm")
    layer = SimpleNamespace(**{name: DiffusionGemmaRMSNorm(hidden, eps=config.rms_norm_eps) for name in names})
    layer.router = DiffusionGemmaTextRouter(config)
    with torch.no_grad():
        for name in names:
            getattr(layer, name).weight.uniform_(0.25, 1.75)
        layer.router.scale.uniform_(0.25, 1.75)
        layer.router.per_expert_scale.uniform_(0.25, 1.75)
    for name in (*names, "router"):
        setattr(layer, name, getattr(layer, name).to(device, dtype))
    layer.layer_scalar = torch.full((1,), 0.75, dtype=dtype, device=device)
    return layer


@contextlib.contextmanager
def _kernels_on():
    """The kernels that run only where the routing's do (CUDA GPUs), here too (the `--tiny` CPU check)."""
    use = expert_routing.use_kernels
    expert_routing.use_kernels = lambda device: True
    try:
        yield
    finally:
        expert_routing.use_kernels = use


def make_attention(dim: int, dtype: torch.dtype, device: torch.device) -> SimpleNamespace:
    """An attention's three head norms (query and key scaled, at random; value unscaled)."""
    attention = SimpleNamespace(q_norm=DiffusionGemmaRMSNorm(dim, eps=1e-6), k_norm=DiffusionGemmaRMSNorm(dim, eps=1e-6),
                                v_norm=DiffusionGemmaRMSNorm(dim, eps=1e-6, with_scale=False))
    with torch.no_grad():
        attention.q_norm.weight.uniform_(0.25, 1.75)
        attention.k_norm.weight.uniform_(0.25, 1.75)
    for name in ("q_norm", "k_norm", "v_norm"):
        setattr(attention, name, getattr(attention, name).to(device, dtype))
    return attention


def composed_after_attention(layer, residual: torch.Tensor, attn: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """What transformers' layer did between attention and MLP, norms fused as before the fused layer."""
    mid = residual + rms_norm(layer.post_attention_layernorm, attn)
    router_in = rms_norm(layer.router.norm, mid) * layer.router.scale * layer.router.scalar_root_size
    return mid, rms_norm(layer.pre_feedforward_layernorm, mid), rms_norm(layer.pre_feedforward_layernorm_2, mid), router_in


def composed_route(router, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' router after its projection (`DiffusionGemmaTextRouter.forward`)."""
    probabilities = torch.softmax(scores, dim=-1, dtype=torch.float32)
    weights, index = torch.topk(probabilities, k=router.config.top_k_experts, dim=-1)
    weights /= weights.sum(dim=-1, keepdim=True)
    return weights * router.per_expert_scale[index], index


def composed_layer_end(layer, dense: torch.Tensor, experts: torch.Tensor, mid: torch.Tensor) -> torch.Tensor:
    both = rms_norm(layer.post_feedforward_layernorm_1, dense) + rms_norm(layer.post_feedforward_layernorm_2, experts)
    out = mid + rms_norm(layer.post_feedforward_layernorm, both)
    out *= layer.layer_scalar
    return out


def composed_fp8_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The four-kernel fp8 row quantization (what compiled layers and CPUs run)."""
    scale = torch.linalg.vector_norm(x, float("inf"), dim=-1, dtype=torch.float32).clamp_(min=1e-12).div_(448.0)
    codes = torch.empty(x.shape, dtype=torch.float8_e4m3fn, device=x.device)
    return torch.div(x, scale.unsqueeze(-1), out=codes), scale


def same(a, b) -> bool:
    pairs = zip(a, b) if isinstance(a, tuple) else [(a, b)]
    return all(x.dtype == y.dtype and torch.equal(x.view(torch.uint8) if x.dtype == torch.float8_e4m3fn else x,
                                                  y.view(torch.uint8) if y.dtype == torch.float8_e4m3fn else y) for x, y in pairs)


def check(tiny: bool, report: dict | None = None) -> dict:
    """Each fused kernel against what it replaced, into `report` as it goes (so a kernel that fails
    on a GPU leaves the entries before it)."""
    report = {} if report is None else report
    device = torch.device("cpu" if tiny else "cuda")
    dtype = torch.float32 if tiny else torch.bfloat16
    rows, hidden, experts, top_k, heads = (6, 96, 16, 4, 2) if tiny else (256, 2816, 128, 8, 16)
    generator = torch.Generator(device=device).manual_seed(0)

    def randn(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=generator, device=device) * scale).to(dtype)

    layer = make_layer(hidden, experts, top_k, dtype, device)

    residual, attn = randn(rows, hidden, scale=4.0), randn(rows, hidden)
    report["after_attention"] = {"bitwise": same(fused_layer.after_attention(layer, residual, attn),
                                                 composed_after_attention(layer, residual, attn)),
                                 "fused_ms": bench(lambda: fused_layer.after_attention(layer, residual, attn), device),
                                 "composed_ms": bench(lambda: composed_after_attention(layer, residual, attn), device)}

    scores = randn(rows, experts, scale=2.0)
    (weights, index), (expected_weights, expected_index) = fused_layer.route(layer.router, scores), composed_route(layer.router, scores)
    report["route"] = {"same_experts": float((index == expected_index).float().mean()),
                       "weights_max_rel_diff": float(((weights - expected_weights).abs() / expected_weights.abs()).max()),
                       "fused_ms": bench(lambda: fused_layer.route(layer.router, scores), device),
                       "composed_ms": bench(lambda: composed_route(layer.router, scores), device)}

    dense, routed, mid = randn(rows, hidden), randn(rows, hidden), randn(rows, hidden, scale=4.0)
    report["layer_end"] = {"bitwise": same(fused_layer.layer_end(layer, dense, routed, mid), composed_layer_end(layer, dense, routed, mid)),
                           "fused_ms": bench(lambda: fused_layer.layer_end(layer, dense, routed, mid), device),
                           "composed_ms": bench(lambda: composed_layer_end(layer, dense, routed, mid), device)}

    # The experts' weighted rows (float32), summed by the last kernel: against torch's sum and cast, on
    # a GPU the order `_top_k_sum` copies (the tiny shape's top-4 is added in order on a CPU too)
    top_rows = (torch.randn(rows, top_k, hidden, generator=generator, device=device)
                * torch.rand(rows, top_k, 1, generator=generator, device=device) * 3)

    def composed_end_rows():
        return composed_layer_end(layer, dense, top_rows.sum(dim=1).to(dtype), mid)

    report["layer_end_rows"] = {"bitwise": same(fused_layer.layer_end(layer, dense, top_rows, mid, rows=True), composed_end_rows()),
                                "fused_ms": bench(lambda: fused_layer.layer_end(layer, dense, top_rows, mid, rows=True), device),
                                "composed_ms": bench(composed_end_rows, device)}

    # The gated GELU at the experts' and the dense MLP's widths, against torch's GELU and product: bit
    # for bit on a GPU (libdevice's tanhf, as torch's kernel); the interpreter's tanh is exp-based
    for count, width in ((rows * top_k, 24), (rows, 40)) if tiny else ((rows * top_k, 704), (rows, 2112)):
        x = randn(count, 2 * width, scale=3.0)

        def composed_gelu_mul(x=x):
            gate, up = x.chunk(2, dim=-1)
            return torch.nn.functional.gelu(gate, approximate="tanh") * up

        fused = fused_mlp.gelu_tanh_mul(x)
        report[f"gelu_mul_{width}"] = {**({} if tiny else {"bitwise": same(fused, composed_gelu_mul())}),
                                       "max_abs_diff": float((fused.float() - composed_gelu_mul().float()).abs().max()),
                                       "fused_ms": bench(lambda x=x: fused_mlp.gelu_tanh_mul(x), device),
                                       "composed_ms": bench(composed_gelu_mul, device)}

    # The attention heads: 16 query heads, and key and value heads as the sliding (own values) and the
    # full attention layers (values are the keys before their norm) have them
    for dim, kv, own_values in ((64, 2, True), (32, 1, False)) if tiny else ((256, 8, True), (512, 2, False)):
        attention = make_attention(dim, dtype, device)  # the heads as the decoder's stacked projection gives them
        qkv = randn(1, rows, (heads + kv + kv * own_values) * dim, scale=2.0)
        query, key, *value = (t.view(1, rows, -1, dim) for t in qkv.split([heads * dim, kv * dim] + [kv * dim] * own_values, dim=-1))
        value = value[0] if value else key
        angles = torch.rand(1, rows, dim // 2, generator=generator, device=device) * rows
        cos, sin = (torch.cat([f(angles)] * 2, dim=-1).to(dtype) for f in (torch.cos, torch.sin))

        def composed_heads(attention=attention, query=query, key=key, value=value, cos=cos, sin=sin):
            return (rope(rms_norm(attention.q_norm, query), cos, sin, unsqueeze_dim=2),
                    rope(rms_norm(attention.k_norm, key), cos, sin, unsqueeze_dim=2), rms_norm(attention.v_norm, value))

        def fused_heads(attention=attention, query=query, key=key, value=value, cos=cos, sin=sin):
            return fused_attention.heads(attention, query, key, value, cos, sin)

        report[f"heads_{dim}"] = {"bitwise": same(fused_heads(), composed_heads()),
                                  "fused_ms": bench(fused_heads, device), "composed_ms": bench(composed_heads, device)}

    # The logits' softcap (cap 30) over a step's vocabulary-sized logits, from the lm_head's output
    head_out = randn(rows, 512 if tiny else 262_144, scale=40.0)
    capped = torch.empty(head_out.shape, dtype=torch.float32, device=device)
    reference = torch.empty(head_out.shape, dtype=torch.float32, device=device)

    def composed_softcap():
        return reference.copy_(head_out).div_(30.0).tanh_().mul_(30.0)

    def fused_softcap():
        return softcap.softcap_into(capped, head_out, 30.0)

    with _kernels_on():  # the kernel's time too (on the `--tiny` CPU check the timing had taken torch's path)
        fused_softcap()
        fused_ms = bench(fused_softcap, device)
    report["softcap"] = {**({} if tiny else {"bitwise": same(capped, composed_softcap())}),
                         "max_abs_diff": float((capped - composed_softcap()).abs().max()),
                         "fused_ms": fused_ms, "composed_ms": bench(composed_softcap, device)}

    top = torch.stack([torch.randperm(experts, generator=generator, device=device)[:top_k] for _ in range(rows)])

    def torch_sort():
        ids, order = torch.sort(top.reshape(-1).to(torch.uint8), stable=True)
        counts = torch.histc(ids.float() if tiny else ids.int(), bins=experts, min=0, max=experts - 1)
        position = torch.empty_like(order)
        position[order] = torch.arange(order.numel(), device=device)
        return order, order // top_k, torch.cumsum(counts, 0, dtype=torch.int32), position

    report["expert_sort"] = {"bitwise": same(expert_routing.sort_by_expert(top, experts, kernel=True), torch_sort()),
                             "fused_ms": bench(lambda: expert_routing.sort_by_expert(top, experts, kernel=True), device),
                             "composed_ms": bench(torch_sort, device)}

    # The layer's end reading the bf16/fp8 experts' rows where the down product left them (in expert
    # order), weighing and summing them: against transformers' weighing into a float32 copy in token
    # order, its sum and cast, then the layer's end
    sorted_rows = expert_routing.SortedRows(randn(rows * top_k, hidden), torch.randperm(rows * top_k, generator=generator, device=device),
                                            torch.rand(rows * top_k, generator=generator, device=device), top_k)

    def composed_end_sorted():
        return composed_layer_end(layer, dense, expert_routing.top_k_sum(sorted_rows, dtype), mid)

    report["layer_end_sorted"] = {"bitwise": same(fused_layer.layer_end(layer, dense, sorted_rows, mid, rows=True), composed_end_sorted()),
                                  "fused_ms": bench(lambda: fused_layer.layer_end(layer, dense, sorted_rows, mid, rows=True), device),
                                  "composed_ms": bench(composed_end_sorted, device)}

    if not tiny and expert_kernels.fp8_grouped_usable(device):  # the interpreter's fp8 rounding is not a GPU's
        x = randn(rows * top_k, 704, scale=3.0)
        report["fp8_rows"] = {"bitwise": same(expert_kernels.quantize_rows_fp8(x), composed_fp8_rows(x)),
                              "fused_ms": bench(lambda: expert_kernels.quantize_rows_fp8(x), device),
                              "composed_ms": bench(lambda: composed_fp8_rows(x), device)}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tiny", action="store_true", help="CPU, float32, small rows, under Triton's interpreter (the tests)")
    args = parser.parse_args()
    start = time.perf_counter()
    report = {"device": torch.cuda.get_device_name() if not args.tiny else "cpu (Triton interpreter)"}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(124))  # `timeout` in gpu_session.sh: still write what was checked
    try:
        with torch.inference_mode():
            check(args.tiny, report)
    except BaseException as exc:  # noqa: BLE001 - a kernel the GPU refuses: keep the entries before it, and say why
        report["error"] = f"{type(exc).__name__}: {exc}"[:2000]
        raise
    finally:
        report["seconds"] = round(time.perf_counter() - start, 1)
        args.out.write_text(json.dumps(report, indent=2))
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
