"""Where a denoising step's GPU time goes, and how exact the quantized expert kernels are (GPU only).

    python benchmarks/gpu_diagnose.py --out diagnose.json

1. A torch profile of one eager bf16 8-step transcription at the real shape: GPU time by kernel
   (the graphs replay these same kernels).
2. Each quantized grouped GEMM against the same codes dequantized to bf16 and multiplied by
   torch's grouped GEMM, at the real expert shapes and routing of 256 tokens x top-8 (with the Triton
   kernel as GPUs without torch's fp8 or bf16 grouped kernels run it, fp8 and bf16); and an int8/int4
   attention projection (4096 x 2816, 256 rows) through the kernel's dense tiles, with its own sweep.
3. The logits' sensitivity of the random-weight model: bf16 first-step logits with transformers'
   `grouped_mm` experts against its `eager` experts (same weights, another summation order).
4. Triton tile sizes for the int4/int8 kernel at the real shapes (M rows per tile, N and K widths,
   warps, pipeline stages), each timed as a CUDA-graph replay.
5. `--parity MODES`: graph replay against the eager forward layer by layer (`graph_parity`): with
   the same kernels every layer must be equal (on the H100 it found the graphs reading freed
   masks, docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import triton.testing  # noqa: E402

from app.engine.diffusion import expert_kernels  # noqa: E402
from app.engine.diffusion.quantization import QuantizedWeight  # noqa: E402
from benchmarks.gpu_real_shape import build_engine, clip, dictation_prompt_and_graphs, graph_and_eager_step, rel_error  # noqa: E402


def routed(tokens: int = 256, experts: int = 128, top_k: int = 8, hidden: int = 2816):
    index = torch.stack([torch.randperm(experts, device="cuda")[:top_k] for _ in range(tokens)])
    ids, order = torch.sort(index.reshape(-1))
    counts = torch.histc(ids.int(), bins=experts, min=0, max=experts - 1)
    ends = torch.cumsum(counts, 0, dtype=torch.int32)
    return ends


def bench(fn) -> float:
    """Median milliseconds of `fn` replayed from a CUDA graph, as the engine runs it: without the
    Python launch cost of its several kernels, which plain `do_bench` would count (it did until
    2026-11-27, so the kernel records before then overstate the small kernels' times)."""
    return triton.testing.do_bench_cudagraph(fn, return_mode="median")


def kernel_accuracy(report: dict, save=lambda: None) -> None:
    ends = routed()
    rows = int(ends[-1])
    for name, shape in {"gate_up": (128, 1408, 2816), "down": (128, 2816, 704)}.items():
        weight = torch.randn(shape, device="cuda") * 0.02
        bf16_weight = weight.bfloat16().transpose(-2, -1)
        x = torch.randn(rows, shape[2], device="cuda", dtype=torch.bfloat16)
        bf16_ms = bench(lambda: torch._grouped_mm(x, bf16_weight, offs=ends))
        for mode in ("fp8", "int8", "int4"):
            q = QuantizedWeight.quantize(weight, mode)
            kernel = q.kernel(x.device)
            fast = q.grouped_mm(x, ends, kernel).float()
            ref = torch._grouped_mm(x, q.dequantize(torch.bfloat16).transpose(-2, -1), offs=ends).float()
            entry = {"kernel": kernel, "rel_error_vs_bf16_dequant": float((fast - ref).norm() / ref.norm()),
                     "fast_ms": bench(lambda: q.grouped_mm(x, ends, kernel)),
                     "bf16_grouped_mm_ms": bf16_ms,
                     "codes_mb": q.codes.numel() * q.codes.element_size() / 1e6}
            if mode in ("int8", "int4"):
                entry["routed_epilogue_bitwise"] = routed_epilogue_matches(q, x, ends, mode)
                sweep = {}
                # Around the best of 2026-11-28 (H100) and 2026-11-29 (H200): int8 m16-32 n64-128 k128 w4 s3,
                # int4 m32 n128 w4 s3 by float bits; int4 also with 16- and 64-row tiles (~16 rows an expert:
                # a 32-row tile multiplies half padding), 8 warps, and nibbles by integer conversion.
                variants = (((16, 32), (64, 128), (128,), (4,), (3,), (False,)) if mode == "int8"
                            else ((16, 32, 64), (128,), (None,), (4, 8), (3,), (False, True)))
                for block_m, block_n, block_k, warps, stages, float_bits in itertools.product(*variants):
                    tiles = dict(block_m=block_m, block_n=block_n, block_k=block_k, num_warps=warps, num_stages=stages,
                                 float_bits=float_bits)
                    try:
                        ms = bench(lambda: expert_kernels.dequant_grouped_mm(x, q.codes, q.scale, ends, mode, q.shape, tiles))
                        if float_bits and not same_nibbles(x, q, ends, mode, tiles):
                            ms = "float-bit nibbles gave other products"
                    except Exception as exc:  # noqa: BLE001 - a config that does not compile
                        ms = str(exc)[:80]
                    sweep[f"m{block_m}_n{block_n}_k{block_k or 'group'}_w{warps}_s{stages}" + ("_floatbits" if float_bits else "")] = ms
                timed = {k: v for k, v in sweep.items() if isinstance(v, float)}
                entry["best_tiles"] = min(timed, key=timed.get) if timed else None
                entry["best_ms"] = min(timed.values()) if timed else None
                entry["sweep"] = sweep
            report.setdefault("kernels", {})[f"{name}_{mode}"] = entry
            save()  # a run stopped by its time limit keeps what it measured
            print(name, mode, {k: v for k, v in entry.items() if k != "sweep"}, file=sys.stderr, flush=True)
        triton_on_other_gpus(report, name, weight, x, ends, bf16_ms)
        save()


def triton_on_other_gpus(report: dict, name: str, weight: torch.Tensor, x: torch.Tensor, ends: torch.Tensor, bf16_ms: float) -> None:
    """The Triton kernel as GPUs without torch's kernels run it (expert_kernels.py): fp8 codes (Ada,
    Blackwell) against torch's fp8 grouped GEMM on the same codes, plain bf16 weights (A100, RTX
    30xx-50xx) against torch's bf16 grouped GEMM: relative difference and time on this GPU."""
    q = QuantizedWeight.quantize(weight, "fp8")
    ref = torch._grouped_mm(x, q.dequantize(torch.bfloat16).transpose(-2, -1), offs=ends).float()
    fp8 = {"rel_error_vs_bf16_dequant": rel_error(expert_kernels.dequant_grouped_mm(x, q.codes, q.scale, ends, "fp8", q.shape), ref),
           "triton_ms": bench(lambda: expert_kernels.dequant_grouped_mm(x, q.codes, q.scale, ends, "fp8", q.shape)),
           "torch_fp8_ms": bench(lambda: q.grouped_mm(x, ends, "fp8")) if expert_kernels.fp8_grouped_usable(x.device) else None}
    fp8["sweep"] = tile_sweep(x, q.codes, q.scale, ends, "fp8", q.shape)
    bf16 = weight.bfloat16()
    ref = torch._grouped_mm(x, bf16.transpose(-2, -1), offs=ends).float()
    plain = {"rel_error_vs_torch": rel_error(expert_kernels.dequant_grouped_mm(x, bf16, None, ends, "float", tuple(bf16.shape)), ref),
             "triton_ms": bench(lambda: expert_kernels.dequant_grouped_mm(x, bf16, None, ends, "float", tuple(bf16.shape))),
             "torch_bf16_ms": bf16_ms, "sweep": tile_sweep(x, bf16, None, ends, "float", tuple(bf16.shape))}
    report.setdefault("kernels", {}).update({f"{name}_fp8_triton": fp8, f"{name}_bf16_triton": plain})
    print(name, "fp8 triton", fp8, "bf16 triton", plain, file=sys.stderr, flush=True)


def tile_sweep(x: torch.Tensor, codes: torch.Tensor, scale: torch.Tensor | None, ends: torch.Tensor, mode: str, shape: tuple) -> dict:
    """Milliseconds of the Triton kernel on fp8 codes or plain weights with 16/32-row and 64/128-wide
    tiles (the int8 sweep's best on an H200 was 32 x 128, now every mode's default): whether it beats
    torch's grouped GEMMs on Hopper too is what decides which one an H100/H200 runs."""
    sweep = {}
    for block_m, block_n in itertools.product((16, 32), (64, 128)):
        tiles = dict(block_m=block_m, block_n=block_n)
        try:
            sweep[f"m{block_m}_n{block_n}"] = bench(lambda: expert_kernels.dequant_grouped_mm(x, codes, scale, ends, mode, shape, tiles))
        except Exception as exc:  # noqa: BLE001 - a config that does not compile
            sweep[f"m{block_m}_n{block_n}"] = str(exc)[:80]
    return sweep


def linear_accuracy(report: dict, save=lambda: None) -> None:
    """An attention projection (4096 x 2816, 256 canvas rows) in int8/int4 through the kernel's dense
    tiles, against bf16: accuracy, time, and a few tile shapes (the expert sweep does not cover them;
    a linear runs 7 times a layer)."""
    rows, shape = 256, (4096, 2816)
    weight = torch.randn(shape, device="cuda") * 0.02
    x = torch.randn(rows, shape[1], device="cuda", dtype=torch.bfloat16)
    bf16_weight = weight.bfloat16()
    bf16_ms = bench(lambda: x @ bf16_weight.T)
    for mode in ("int8", "int4"):
        q = QuantizedWeight.quantize(weight, mode)
        fast = expert_kernels.dequant_grouped_mm(x, q.codes, q.scale, None, mode, q.shape)
        ref = (x @ q.dequantize(torch.bfloat16).T).float()
        entry = {"rel_error_vs_bf16_dequant": rel_error(fast, ref), "bf16_ms": bf16_ms,
                 "fast_ms": bench(lambda: expert_kernels.dequant_grouped_mm(x, q.codes, q.scale, None, mode, q.shape)),
                 "codes_mb": q.codes.numel() * q.codes.element_size() / 1e6, "sweep": {}}
        # 64 x 64 on 4 warps is the Hopper default since 2026-11-29 (0.039 ms int4, where bf16 takes 0.010):
        # around it, narrower tiles (more programs for 256 rows: 4 x 64 fill an H200's 132 SMs twice) and
        # taller ones (each M tile unpacks the whole weight again: 4 times with 64 rows, once with 256);
        # for int4 also nibbles by float bits (the experts' way, not yet timed on a plain matrix)
        shapes = ((64, 128, 8), (64, 64, 4), (64, 32, 4), (128, 64, 8), (128, 32, 4), (256, 32, 8), (32, 64, 4))
        for (block_m, block_n, warps), float_bits in itertools.product(shapes, (False, True) if mode == "int4" else (False,)):
            tiles = dict(block_m=block_m, block_n=block_n, num_warps=warps, float_bits=float_bits)
            try:
                ms = bench(lambda: expert_kernels.dequant_grouped_mm(x, q.codes, q.scale, None, mode, q.shape, tiles))
                if float_bits and not same_nibbles(x, q, None, mode, tiles):
                    ms = "float-bit nibbles gave other products"
            except Exception as exc:  # noqa: BLE001 - a config that does not compile
                ms = str(exc)[:80]
            entry["sweep"][f"m{block_m}_n{block_n}_w{warps}" + ("_floatbits" if float_bits else "")] = ms
        report.setdefault("kernels", {})[f"linear_{mode}"] = entry
        save()
        print("linear", mode, {k: v for k, v in entry.items()}, file=sys.stderr, flush=True)


def same_nibbles(x: torch.Tensor, q, ends: torch.Tensor | None, mode: str, tiles: dict) -> bool:
    """int4 nibbles by float bits and by integer conversion, in the same tiles: the same products bit for bit?"""
    by_bits = expert_kernels.dequant_grouped_mm(x, q.codes, q.scale, ends, mode, q.shape, {**tiles, "float_bits": True})
    return torch.equal(by_bits, expert_kernels.dequant_grouped_mm(x, q.codes, q.scale, ends, mode, q.shape, {**tiles, "float_bits": False}))


def routed_epilogue_matches(q, x: torch.Tensor, ends: torch.Tensor, mode: str) -> bool:
    """The experts' down product with its routing in the kernel's epilogue (bf16 rows rounded, then
    weighted in float32 and put at their slots) against the product, multiply and scatter it
    replaced: equal bit for bit? (The CPU tests can check this in float32 only.)"""
    rows = int(ends[-1])
    order = torch.randperm(rows, device=x.device)
    weights = torch.rand(rows, device=x.device)
    x = x[:rows]
    fused = expert_kernels.dequant_grouped_mm(x, q.codes, q.scale, ends, mode, q.shape, route=(order, weights))
    out = expert_kernels.dequant_grouped_mm(x, q.codes, q.scale, ends, mode, q.shape) * weights[order].unsqueeze(-1)
    unsorted = torch.empty_like(out)
    unsorted[order] = out
    return bool(torch.equal(fused, unsorted))


def profile(report: dict, engine) -> None:
    from app.engine.diffusion.denoising import Denoiser

    engine.denoiser = Denoiser(engine.model.backbone, use_graphs=False)
    audio = clip()
    engine.transcribe(audio, language="en", steps=8, early_exit=False)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        engine.transcribe(audio, language="en", steps=8, early_exit=False)
    rows = []
    for event in prof.key_averages():
        total = getattr(event, "device_time_total", 0) or getattr(event, "cuda_time_total", 0)
        if total > 0:
            rows.append((total / 1000.0, event.count, event.key[:90]))
    rows.sort(reverse=True)
    report["profile_ms_by_kernel"] = [{"ms": round(ms, 2), "calls": calls, "kernel": key} for ms, calls, key in rows[:40]]
    report["profile_gpu_ms_total"] = round(sum(r[0] for r in rows), 1)
    for r in rows[:25]:
        print(f"{r[0]:8.2f} ms {r[1]:6d}  {r[2]}", file=sys.stderr)


def first_step_logits(engine, audio) -> torch.Tensor:
    """lm_head's output on the first step, through the eager loop (hooks do not fire in graph replays)."""
    from app.engine.diffusion.denoising import Denoiser

    captured: list[torch.Tensor] = []
    handle = engine.model.backbone.lm_head.register_forward_hook(lambda module, args, out: captured.append(out.float()))
    saved, engine.denoiser = engine.denoiser, Denoiser(engine.model.backbone, use_graphs=False)
    try:
        engine.transcribe(audio, language="en", steps=1, early_exit=False, seed=5)
    finally:
        handle.remove()
        engine.denoiser = saved
    return captured[0]


def sensitivity(report: dict, engine) -> None:
    audio = clip()
    text_config = engine.model.backbone.config.get_text_config()
    grouped = first_step_logits(engine, audio)
    saved = text_config._experts_implementation
    text_config._experts_implementation = "eager"
    try:
        eager = first_step_logits(engine, audio)
    finally:
        text_config._experts_implementation = saved
    report["bf16_logits_grouped_vs_eager_experts"] = float((grouped - eager).norm() / eager.norm())
    print("sensitivity", report["bf16_logits_grouped_vs_eager_experts"], saved, file=sys.stderr)


def graph_parity(engine, audio) -> dict:
    """Where graph replay and the eager forward part ways, for one denoising step on the same inputs.

    The same prompt is prefilled by the captured prefill and eagerly, and the same canvas goes
    through the captured first step and the eager decoder forward. Forward hooks copy every decoder
    layer's output into buffers: hooks run while a graph is captured, so the copies are part of the
    graph and its replay fills the buffers too. Reported: per layer, the KV cache the prefills wrote
    and the layer's output, bitwise equal or the largest difference; then the logits. With the
    same kernels everything is equal; the first layer that differs names where a kernel is not.
    """
    from app.engine.base import prepare_all

    backbone, denoiser = engine.model.backbone, engine.denoiser
    layers = backbone.model.decoder.layers
    phase: list[str | None] = [None]
    buffers: dict[tuple[str, int], torch.Tensor] = {}

    def recorder(index: int):
        def record(module, args, out):
            if phase[0] is not None:
                key = (phase[0], index)
                if key not in buffers or buffers[key].shape != out.shape:
                    buffers[key] = torch.empty_like(out)  # during a capture this lives in the graph's memory
                buffers[key].copy_(out)
        return record

    hooks = [layer.register_forward_hook(recorder(i)) for i, layer in enumerate(layers)]
    try:
        with torch.inference_mode():
            engine.transcribe(audio, language="en", steps=1, early_exit=False)  # eager: queues this shape
            phase[0] = "graph"
            prepare_all(engine)  # captures it, the buffer copies included
            phase[0] = None
            prompt, graphs_ = dictation_prompt_and_graphs(engine, audio)
            if graphs_ is None:
                return {"error": f"no graphs were captured ({denoiser.fast_path_error or denoiser.fast_path})"}
            # a real replay runs no hooks (its copies were captured); an emulated one does
            pair = graph_and_eager_step(backbone, prompt, graphs_, phase=lambda name: phase.__setitem__(0, name))
            graph_layers = [buffers[("graph", i)] for i in range(len(layers))]
            eager_layers = [buffers[("eager", i)] for i in range(len(layers))]
    finally:
        phase[0] = None
        for hook in hooks:
            hook.remove()
    graph_cache, cache, graph_logits, eager_logits = pair.graph_cache, pair.eager_cache, pair.graph_logits, pair.eager_logits

    def difference(a: torch.Tensor, b: torch.Tensor) -> float:
        return 0.0 if torch.equal(a, b) else float((a.float() - b.float()).abs().max())

    cache_diff = [max(difference(g.keys, e.keys), difference(g.values, e.values)) for g, e in zip(graph_cache.layers, cache.layers)]
    layer_diff = [difference(g, e) for g, e in zip(graph_layers, eager_layers)]
    first = next((i for i, d in enumerate(layer_diff) if d), None)
    return {
        "kv_cache_max_abs_diff_by_layer": cache_diff,
        "first_prefill_layer_that_differs": next((i for i, d in enumerate(cache_diff) if d), None),
        "layer_output_max_abs_diff": layer_diff,
        "layer_output_rel_error": [round(rel_error(g, e), 6) for g, e in zip(graph_layers, eager_layers)],
        "first_decoder_layer_that_differs": first,
        "logits_max_abs_diff": difference(graph_logits, eager_logits),
        "logits_rel_error": round(rel_error(graph_logits, eager_logits), 6),
        "argmax_agreement": float((graph_logits.argmax(-1) == eager_logits.argmax(-1)).float().mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--kernels-only", action="store_true", help="parts 2 and 4 only (no model build)")
    parser.add_argument("--parity", default="", help="comma-separated modes to run part 5 for (graph vs eager by layer), then stop")
    args = parser.parse_args()
    report: dict = {}
    if args.parity:
        for mode in args.parity.split(","):
            try:
                engine = build_engine(mode, torch.device("cuda"), tiny=False)
                report.setdefault("graph_parity", {})[mode] = graph_parity(engine, clip())
            except Exception as exc:  # noqa: BLE001 - the other modes still run
                report.setdefault("graph_parity", {})[mode] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            finally:
                engine = None
                torch.cuda.empty_cache()
            print(mode, json.dumps(report["graph_parity"][mode])[:600], file=sys.stderr, flush=True)
            args.out.write_text(json.dumps(report, indent=2))
        return
    save = lambda: args.out.write_text(json.dumps(report, indent=2))  # noqa: E731
    linear_accuracy(report, save)  # first: short, and never measured before
    kernel_accuracy(report, save)
    if args.kernels_only:
        return
    engine = build_engine("bf16", torch.device("cuda"), tiny=False)
    for part in (sensitivity, profile):
        part(report, engine)
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
