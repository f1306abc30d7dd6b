"""GPU speed and memory of the diffusion engine at the real model's shape, random weights, per quantization.

    python benchmarks/gpu_real_shape.py --json --out gpu_real_shape.json          # on an H100/H200
    python benchmarks/gpu_real_shape.py --tiny --device cpu --runs 2 --json       # smoke test, any machine

Builds DiffusionGemma 26B-A4B's configuration (hidden 2816, 30 layers, 128 experts top-8, vocab
262144, canvas 256; a small vision tower, dropped as the loader does) on the meta device, ties
encoder and decoder layers, and only then gives each distinct weight memory on the device (a plain
build allocates both sides before tying them: ~100 GB). Adds a whisper-small-shaped encoder and a
rank-32 LoRA on the attention, quantizes through the production code, and runs the production
engine on a 5 s clip, end to end from samples to text, early exit off.

Per mode: build and warm-up seconds, the preparation's seconds (CUDA-graph capture, and with
`--compile` the Inductor compile of the decoder layers: what the worker does while idle), memory after load
and peak, features / encoder / prefill, ms per denoising step, 8- and 16-step totals (p50 and p95),
and the floor: the bytes of weights one step reads over the copy bandwidth measured on this GPU
(`floor_ms_per_step`, `step_to_floor_ratio`), and a kernel profile of one transcription. Checks in
the same run: graph replay vs the eager forward give bitwise equal logits for one step (same
kernels; `graph_check`); with `--compile`, each compiled decoder layer against the eager one on the
same inputs, within a stated tolerance or its own one-ulp noise (`compile_check`); and each quantized
mode's expert kernels vs the same codes dequantized agree per product within a stated tolerance.
`MODE+triton` (in `--parts`) runs a mode as GPUs without torch's grouped GEMMs do (A100, RTX
30xx-50xx; fp8 on Ada and Blackwell): its experts through the Triton kernel. `fp8+triton-experts`: fp8's
experts through the Triton kernel and its linears through torch's fp8 product, the mix the H200's
per-product times favour (docs/benchmarks.md, 2026-11-29), timed end to end before it becomes the
default. The peer: autoregressive Whisper (small and
large-v3-turbo shapes, random weights) through transformers on the same GPU and clip, exactly 40
new tokens. A time budget skips whatever would start after it rather than overrunning.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from peft import LoraConfig, inject_adapter_in_model  # noqa: E402
from torch import nn  # noqa: E402
from transformers import (  # noqa: E402
    CompileConfig,
    DiffusionGemmaConfig,
    DiffusionGemmaForBlockDiffusion,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
)
from transformers.cache_utils import DynamicCache  # noqa: E402
from transformers.models.whisper.modeling_whisper import WhisperEncoder  # noqa: E402

from app.engine.base import SAMPLE_RATE, BatchItem, prepare_all  # noqa: E402
from app.engine.diffusion import expert_kernels  # noqa: E402
from app.engine.diffusion.audio_encoder import WhisperAudioEncoder  # noqa: E402
from app.engine.diffusion.config import AdapterConfig, ProjectorConfig  # noqa: E402
from app.engine.diffusion.denoising import Denoiser  # noqa: E402
from app.engine.diffusion.prefill import prefill  # noqa: E402
from app.engine.diffusion.engine import DiffusionEngine  # noqa: E402
from app.engine.diffusion.loading import DiffusionModel  # noqa: E402
from app.engine.diffusion.lora import merge_decoder_lora  # noqa: E402
from app.engine.diffusion.projector import AudioProjector  # noqa: E402
from app.engine.diffusion.prompt import PromptBuilder  # noqa: E402
from app.engine.diffusion.quantization import QuantizedWeight, compute_dtype, estimate_bytes, quantize_backbone  # noqa: E402
from app.engine.diffusion.tiny import LORA_TARGETS, TINY_PROJECTOR, tiny_backbone_config, tiny_tokenizer  # noqa: E402
from benchmarks.machine import machine_info  # noqa: E402

CLIP_SECONDS = 5.0
WHISPER_NEW_TOKENS = 40
WHISPER_SHAPES = {
    "whisper-small": dict(d_model=768, encoder_layers=12, decoder_layers=12, encoder_attention_heads=12,
                          decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072, num_mel_bins=80, vocab_size=51865),
    "whisper-large-v3-turbo": dict(d_model=1280, encoder_layers=32, decoder_layers=4, encoder_attention_heads=20,
                                   decoder_attention_heads=20, encoder_ffn_dim=5120, decoder_ffn_dim=5120, num_mel_bins=128,
                                   vocab_size=51866),
}
# One expert product, fast kernel vs the same codes dequantized (relative L2): int8/int4 differ by bf16
# rounding only; fp8 also rounds the activations to fp8 (3 mantissa bits), ~2.7% measured.
INT_TOLERANCE = 1e-2
FP8_TOLERANCE = 5e-2


def real_backbone_config() -> DiffusionGemmaConfig:
    """google/diffusiongemma-26B-A4B-it's shape (public config values), with a token vision tower."""
    return DiffusionGemmaConfig(
        text_config=dict(
            vocab_size=262_144,
            hidden_size=2816,
            intermediate_size=2112,
            num_hidden_layers=30,
            num_attention_heads=16,
            num_key_value_heads=8,
            head_dim=256,
            global_head_dim=512,
            num_global_key_value_heads=2,
            num_experts=128,
            top_k_experts=8,
            moe_intermediate_size=704,
            sliding_window=1024,
            max_position_embeddings=262_144,
            final_logit_softcapping=30.0,
            layer_types=(["sliding_attention"] * 5 + ["full_attention"]) * 5,
            eos_token_id=[1, 106, 50],
        ),
        vision_config=dict(
            model_type="gemma4_vision", hidden_size=64, intermediate_size=128, num_hidden_layers=1,
            num_attention_heads=2, num_key_value_heads=2, head_dim=32,
        ),
        canvas_length=256,
    )


def build_tied(config: DiffusionGemmaConfig, dtype: torch.dtype, device: torch.device) -> DiffusionGemmaForBlockDiffusion:
    """Random weights, each tied weight allocated once: build on meta, tie, then materialise per distinct tensor."""
    with torch.device("meta"):
        model = DiffusionGemmaForBlockDiffusion._from_config(config, dtype=dtype)
    model.tie_weights()
    made: dict[int, torch.Tensor] = {}
    for module in model.modules():
        for table, wrap in ((module._parameters, lambda t: nn.Parameter(t, requires_grad=False)), (module._buffers, lambda t: t)):
            for name, tensor in table.items():
                if tensor is not None and tensor.is_meta:
                    if id(tensor) not in made:
                        made[id(tensor)] = wrap(torch.empty_like(tensor, device=device))
                    table[name] = made[id(tensor)]
    model.tie_weights()
    model.init_weights()
    for module in model.modules():  # init_weights leaves the encoder layers' scalars unset
        if "layer_scalar" in module._buffers:
            module.layer_scalar.fill_(1.0)
    return model.eval()


def whisper_small_config() -> WhisperConfig:
    return WhisperConfig(**WHISPER_SHAPES["whisper-small"])


def build_engine(mode: str, device: torch.device, *, tiny: bool, compile_layers: bool = False) -> DiffusionEngine:
    """The production engine around randomly initialised parts built directly on `device` (not warmed up)."""
    dtype = compute_dtype(mode, device)
    tokenizer = tiny_tokenizer()
    audio_token_id = tokenizer.convert_tokens_to_ids("<|audio|>")
    backbone_config = tiny_backbone_config() if tiny else real_backbone_config()
    projector_config = TINY_PROJECTOR if tiny else ProjectorConfig()
    whisper_config = WhisperConfig(d_model=32, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64) if tiny else whisper_small_config()
    backbone = build_tied(backbone_config, dtype, device)
    with torch.device(device):
        encoder = WhisperEncoder._from_config(whisper_config, dtype=dtype).eval()
    backbone.generation_config.update(eos_token_id=[1, tokenizer.convert_tokens_to_ids("<turn|>")], pad_token_id=0)
    lora = LoraConfig(r=4 if tiny else 32, lora_alpha=8 if tiny else 64, target_modules=LORA_TARGETS, init_lora_weights=False)
    inject_adapter_in_model(lora, backbone)
    backbone.to(device, dtype)
    merge_decoder_lora(backbone)  # as the loader does
    backbone.model.encoder.vision_tower = None
    backbone.model.encoder.embed_vision = None
    quantize_backbone(backbone, mode, device)
    hidden = backbone_config.text_config.hidden_size
    projector = AudioProjector(projector_config, whisper_config.d_model, hidden).to(device, dtype).eval()
    audio = WhisperAudioEncoder(WhisperFeatureExtractor(feature_size=whisper_config.num_mel_bins), encoder, None)
    config = AdapterConfig(audio_token_id=audio_token_id, projector=projector_config)
    prompt = PromptBuilder(tokenizer, config.prompt_template, audio_token_id, projector.output_length(audio.frames))
    return DiffusionEngine(DiffusionModel(config, backbone, audio, projector, tokenizer, prompt, device, mode),
                           compile_layers=compile_layers)


def clip() -> np.ndarray:
    t = np.arange(int(CLIP_SECONDS * SAMPLE_RATE)) / SAMPLE_RATE
    noise = np.random.default_rng(0).standard_normal(t.shape[0]) * 0.02
    return (0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t) + noise).astype(np.float32)


def copy_bandwidth(device: torch.device) -> float | None:
    """Bytes per second of a large device-to-device copy, counting bytes read and written."""
    if device.type != "cuda":
        return None
    src = torch.empty(2**30, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(20):
        dst.copy_(src)
    end.record()
    torch.cuda.synchronize(device)
    seconds = start.elapsed_time(end) / 1000.0 / 20
    del src, dst
    return 2 * 2**30 / seconds


def step_weight_bytes(engine: DiffusionEngine) -> int:
    """Bytes of the weights one denoising step reads: every distinct tensor of the text decoder
    (experts included: 2,048 routed rows reach nearly all of them) and the tied embedding/lm_head."""
    backbone = engine.model.backbone
    seen: set[int] = set()
    total = 0
    for module in (backbone.model.decoder, backbone.lm_head):
        for tensor in [*module.parameters(), *module.buffers()]:
            storage = tensor.untyped_storage()  # stacked projections: the separate ones are views of their rows
            if storage.data_ptr() not in seen and tensor.dim() >= 1:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
    return total


def timed_runs(engine: DiffusionEngine, audio: np.ndarray, steps: int, runs: int) -> dict:
    totals, prefills, step_ms, features, encoders = [], [], [], [], []
    for _ in range(runs):
        t = engine.transcribe(audio, language="en", steps=steps, early_exit=False)
        assert t.steps_used == steps
        totals.append(t.timings["total"])
        prefills.append(t.timings["prefill"])
        features.append(t.timings["features"])
        encoders.append(t.timings["encoder"])
        step_ms.extend(t.timings["steps"])
    return {
        f"total_ms_p50_{steps}_steps": _p(totals, 50),
        f"total_ms_p95_{steps}_steps": _p(totals, 95),
        f"prefill_ms_p50_{steps}_steps": _p(prefills, 50),
        f"step_ms_p50_{steps}_steps": _p(step_ms, 50),
        f"step_ms_p95_{steps}_steps": _p(step_ms, 95),
        f"features_ms_p50_{steps}_steps": _p(features, 50),
        f"encoder_ms_p50_{steps}_steps": _p(encoders, 50),
    }


def batched_runs(engine: DiffusionEngine, audio: np.ndarray, batch: int, runs: int) -> dict:
    """A speech server's batch: `batch` requests of the clip in one denoising pass of 8 steps
    (`transcribe_batch`, as `python -m app serve` runs waiting requests). A step reads every weight
    whatever the batch, so near the bandwidth floor a batch costs about one request."""
    items = [BatchItem(audio, "en") for _ in range(batch)]
    engine.transcribe_batch(items, steps=8, early_exit=False)  # runs eagerly and queues this batch's shape
    prepare_all(engine)  # its graphs (and compile), as the server does while idle; before 2026-11-28 this was missing
    totals, step_ms = [], []
    for _ in range(runs):
        t = engine.transcribe_batch(items, steps=8, early_exit=False)[0]
        assert t.timings["batch"] == batch
        totals.append(t.timings["total"])
        step_ms.extend(t.timings["steps"])
    total = _p(totals, 50)
    return {"total_ms_p50_8_steps": total, "step_ms_p50": _p(step_ms, 50),
            "requests_per_s": round(batch / total * 1000.0, 2)}


def kernel_check(engine: DiffusionEngine) -> dict:
    """Each quantized expert product of layer 0 (its kernel on this device) against the same codes
    dequantized to the compute dtype and multiplied expert by expert, on 256 tokens x top-k rows.

    Checked per product, not on logits: with random weights the 30-layer network is chaotic (two
    bf16 summation orders of the experts give first-step logits 123% apart, H200,
    benchmarks/gpu_diagnose.py), so logits cannot tell a right kernel from a wrong one.
    """
    experts = engine.model.backbone.model.decoder.layers[0].experts
    device, dtype = engine.model.device, compute_dtype(engine.quantization, engine.model.device)
    generator = torch.Generator(device=device).manual_seed(0)
    top_k, count = experts.experts.config.top_k_experts, experts.experts.num_experts
    index = torch.rand(256, count, generator=generator, device=device).topk(top_k, dim=-1).indices
    ids, _ = torch.sort(index.reshape(-1))
    ends = torch.cumsum(torch.bincount(ids, minlength=count), 0).to(torch.int32)
    result = {}
    for name, weight in (("gate_up", experts.gate_up), ("down", experts.down)):
        x = torch.randn(ids.shape[0], weight.shape[-1], generator=generator, device=device).to(dtype)
        kernel = weight.kernel(device)
        if kernel == "dequantize":
            continue
        fast = weight.grouped_mm(x, ends, kernel).float()
        full = weight.dequantize(dtype)
        starts = [0, *ends[:-1].tolist()]
        reference = torch.cat([x[a:b] @ full[e].T for e, (a, b) in enumerate(zip(starts, ends.tolist()))]).float()
        error = float((fast - reference).norm() / reference.norm())
        tolerance = FP8_TOLERANCE if kernel == "fp8" else INT_TOLERANCE
        result[name] = {"kernel": kernel, "rel_error": round(error, 5), "tolerance": tolerance, "ok": error <= tolerance}
    return result


def graph_check(engine: DiffusionEngine, audio: np.ndarray, runs: int) -> dict:
    """Graph replay against the eager loop, and the eager loop's time.

    Without compiled layers the graphs replay the eager kernels, so one denoising step's logits on
    the same prompt and canvas must be bitwise equal (`first_step_logits_identical`), and so must
    the Whisper encoder's frames (`encoder_frames_identical`). Text alone
    cannot tell: with random weights it stayed the same while the graphs read freed masks (H100,
    2026-11-28). With compiled layers fusion changes the rounding, which 30 random layers blow up
    (`compile_check` is the test there); the text is reported either way.
    """
    result = {}
    if engine.denoiser.compiled is None:
        prompt, prompt_graphs = dictation_prompt_and_graphs(engine, audio)
        if prompt_graphs is None:
            result["error"] = f"no graphs for the clip's shape ({engine.denoiser.fast_path_error or engine.denoiser.fast_path})"
        else:
            pair = graph_and_eager_step(engine.model.backbone, prompt, prompt_graphs)
            result["first_step_logits_identical"] = torch.equal(pair.graph_logits, pair.eager_logits)
            result["first_step_logits_rel_error"] = rel_error(pair.graph_logits, pair.eager_logits)
    encoder = engine.model.audio
    if encoder._graphs:  # the Whisper encoder's graph (captured by warm_up) against its eager forward
        with torch.inference_mode():
            features = encoder.features([audio])
            result["encoder_frames_identical"] = torch.equal(encoder.encode(features), encoder.encoder(features).last_hidden_state)
    fast = engine.transcribe(audio, language="en", steps=8, early_exit=False, seed=11).text
    saved, engine.denoiser = engine.denoiser, Denoiser(engine.model.backbone, use_graphs=False)
    try:
        eager = engine.transcribe(audio, language="en", steps=8, early_exit=False, seed=11).text
        timing = timed_runs(engine, audio, 8, runs)
    finally:
        engine.denoiser = saved
    return {**result, "identical_text": fast == eager, "eager_total_ms_p50_8_steps": timing["total_ms_p50_8_steps"],
            "eager_step_ms_p50": timing["step_ms_p50_8_steps"], "eager_prefill_ms_p50": timing["prefill_ms_p50_8_steps"]}


def dictation_prompt_and_graphs(engine: DiffusionEngine, audio: np.ndarray):
    """The prompt a 1-step dictation of `audio` builds, and the graphs it replays (None: eager)."""
    denoiser, seen = engine.denoiser, {}
    run = denoiser._denoise

    def spy(prompt, prompt_graphs, **kwargs):
        seen.update(prompt=prompt, graphs=prompt_graphs)
        return run(prompt, prompt_graphs, **kwargs)

    denoiser._denoise = spy
    try:
        engine.transcribe(audio, language="en", steps=1, early_exit=False)
    finally:
        denoiser._denoise = run
    return seen["prompt"], seen["graphs"]


class StepPair(NamedTuple):
    """One denoising step on the same prompt and canvas, replayed from graphs and run eagerly."""

    graph_logits: torch.Tensor
    eager_logits: torch.Tensor
    graph_cache: object
    eager_cache: object


def graph_and_eager_step(backbone, prompt, prompt_graphs, phase: Callable[[str], None] = lambda name: None) -> StepPair:
    """One denoising step's logits on a random canvas: replayed from `prompt_graphs`, then eagerly
    (`phase` is told which runs next, for hooks that record layers)."""
    vocab = backbone.config.get_text_config().vocab_size
    canvas = torch.randint(vocab, (prompt.batch, backbone.config.canvas_length), device=prompt.device,
                           generator=torch.Generator(prompt.device).manual_seed(3))
    with torch.inference_mode():
        phase("graph")
        graph_cache = prompt_graphs.run_prefill(prompt)
        graph_logits = prompt_graphs.first_step(decoder_input_ids=canvas).logits.float().clone()
        phase("eager")
        cache = prefill(backbone, prompt, DynamicCache(config=backbone.config.get_text_config(decoder=True)))
        masks = backbone.model.decoder.create_diffusion_decoder_attention_mask(
            config=backbone.config, inputs_embeds=canvas.unsqueeze(-1), cache=cache, decoder_attention_mask=prompt.decoder_attention_mask
        )
        eager_logits = backbone(decoder_input_ids=canvas, decoder_attention_mask=masks, cache=cache,
                                decoder_position_ids=prompt.canvas_positions).logits.float()
    return StepPair(graph_logits, eager_logits, graph_cache, cache)


def kernel_profile(engine: DiffusionEngine, audio: np.ndarray, top: int = 25) -> dict:
    """GPU time by kernel of one 8-step transcription on the path just timed (graph replays
    included): where a step's time goes now, beyond what the totals say."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        engine.transcribe(audio, language="en", steps=8, early_exit=False)
    rows = []
    for event in prof.key_averages():
        total = getattr(event, "device_time_total", 0) or 0
        if total > 0:
            rows.append((total / 1000.0, event.count, event.key[:100]))
    rows.sort(reverse=True)
    return {"gpu_ms": round(sum(r[0] for r in rows), 1), "kernel_launches": sum(r[1] for r in rows),
            "top": [{"ms": round(ms, 2), "calls": calls, "kernel": key} for ms, calls, key in rows[:top]]}


def compile_check(engine: DiffusionEngine, audio: np.ndarray) -> dict:
    """Compiled against eager decoder layers on identical inputs, layer by layer, measured against
    the layer's own sensitivity to rounding.

    One eager denoising step records every decoder layer's inputs and output (the decoder layers
    only read the prompt's cache, so running one again changes nothing); each layer then runs
    compiled on those same inputs, and eagerly on inputs moved by one bf16 unit in the last place
    (a random sign per element). Fusion changes the rounding, and with random weights a rounding
    difference can flip a token's 8th expert on a near-tie, which moves that token's output a lot:
    the first layers, whose residual stream is still small, show it most (H100: 6.4% at layer 0,
    1% by layer 30). So a layer passes when its compiled error is within the stated tolerance or
    within twice what one ulp of input noise does to the eager layer; a wrong kernel is off by
    order one either way. Layer by layer, because through 30 layers of random weights any rounding
    difference grows until whole logits differ (docs/records/gpu_diagnose-*.json).
    """
    layers = engine.model.backbone.model.decoder.layers
    calls: list = []
    hooks = [layer.register_forward_hook(lambda module, args, kwargs, out: calls.append((module, args, kwargs, out.clone())),
                                         with_kwargs=True) for layer in layers]
    saved, engine.denoiser = engine.denoiser, Denoiser(engine.model.backbone, use_graphs=False)
    try:
        engine.transcribe(audio, language="en", steps=1, early_exit=False)
    finally:
        engine.denoiser = saved
        for hook in hooks:
            hook.remove()
    generator = torch.Generator(device=engine.model.device).manual_seed(0)
    errors, noise_errors, calls_before = [], [], saved.compiled.calls
    with torch.inference_mode():
        for module, args, kwargs, eager in calls[: len(layers)]:
            with saved.compiled.active():
                fused = module(*args, **kwargs)
            errors.append(rel_error(fused, eager))
            noisy_args, noisy_kwargs = _one_ulp(args, kwargs, generator)
            noise_errors.append(rel_error(module(*noisy_args, **noisy_kwargs), eager))
    tolerance = 1e-4 if engine.model.backbone.dtype == torch.float32 else 3e-2
    ok = all(e <= max(tolerance, 2 * n) for e, n in zip(errors, noise_errors))
    return {"layers": len(errors), "compiled_calls": saved.compiled.calls - calls_before, "max_rel_error": float(f"{max(errors):.3g}"),
            "tolerance": tolerance, "rule": "each layer within the tolerance or within 2x its one-ulp input noise", "ok": ok,
            "rel_error_by_layer": [float(f"{e:.3g}") for e in errors],
            "one_ulp_noise_rel_error_by_layer": [float(f"{n:.3g}") for n in noise_errors]}


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """|a - b| / |b| over the whole tensors, in float32."""
    return float((a.float() - b.float()).norm() / b.float().norm())


def _one_ulp(args: tuple, kwargs: dict, generator: torch.Generator) -> tuple[tuple, dict]:
    """The layer's hidden-state input moved by about one unit in the last place of its dtype."""
    def nudge(x: torch.Tensor) -> torch.Tensor:
        ulp = torch.finfo(x.dtype).eps
        sign = torch.randint(0, 2, x.shape, generator=generator, device=x.device, dtype=torch.int8).float() * 2 - 1
        return (x.float() * (1 + sign * ulp)).to(x.dtype)

    if args:
        return (nudge(args[0]), *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": nudge(kwargs["hidden_states"])}


@contextlib.contextmanager
def without_torch_grouped_kernels(on: bool) -> Iterator[None]:
    """MODE+triton: the mode as a GPU without torch's grouped GEMMs runs it (A100, RTX 30xx-50xx; fp8
    on Ada and Blackwell): the experts through the Triton kernel, on this GPU, for its end-to-end time."""
    if not on:
        yield
        return
    saved = expert_kernels.fp8_grouped_usable, expert_kernels.torch_runs_bf16_experts
    expert_kernels.fp8_grouped_usable = expert_kernels.torch_runs_bf16_experts = lambda device: False
    try:
        yield
    finally:
        expert_kernels.fp8_grouped_usable, expert_kernels.torch_runs_bf16_experts = saved


@contextlib.contextmanager
def triton_fp8_experts(on: bool) -> Iterator[None]:
    """fp8+triton-experts: the experts' fp8 codes read by the Triton kernel where torch's fp8 grouped
    GEMM would run, the linears left to torch's fp8 product."""
    if not on:
        yield
        return
    kernel = QuantizedWeight.kernel

    def experts_in_triton(weight: QuantizedWeight, device: torch.device) -> str:
        chosen = kernel(weight, device)
        return "triton" if chosen == "fp8" and len(weight.shape) == 3 else chosen

    QuantizedWeight.kernel = experts_in_triton
    try:
        yield
    finally:
        QuantizedWeight.kernel = kernel


def measure(mode: str, device: torch.device, *, tiny: bool, runs: int, step_counts: tuple[int, ...], bandwidth: float | None,
            batches: tuple[int, ...] = (), compile_layers: bool = False) -> dict:
    started = time.perf_counter()
    engine = build_engine(mode, device, tiny=tiny, compile_layers=compile_layers)
    _sync(device)
    result: dict = {"build_s": round(time.perf_counter() - started, 1), "memory_gib_after_load": _memory_gib(device)}
    warm = time.perf_counter()
    engine.warm_up()
    _sync(device)
    result["warm_up_s"] = round(time.perf_counter() - warm, 2)
    result["fast_path"] = engine.denoiser.fast_path
    result["prepare_s"] = round(prepare_all(engine), 2)  # graph capture (and compile): what the worker does while idle
    result["prepared_shapes"] = len(engine.denoiser._ready)  # the warm-up's prompt shapes, each with its graphs
    if device.type == "cuda":  # what those graphs keep (vocabulary-sized logits among them), beside the weights
        result["memory_gib_after_preparing"] = _memory_gib(device)
    if engine.denoiser.fast_path_error:
        result["fast_path_error"] = engine.denoiser.fast_path_error
    if compile_layers:
        from app.engine.diffusion.compiled_layers import cache_counters

        result["compile_cache"] = cache_counters()
    audio = clip()
    engine.transcribe(audio, language="en", steps=step_counts[0], early_exit=False)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for steps in step_counts:
        result.update(timed_runs(engine, audio, steps, runs))
    result["prefill_ms_p50"] = result[f"prefill_ms_p50_{step_counts[0]}_steps"]
    result["step_ms_p50"] = result[f"step_ms_p50_{step_counts[-1]}_steps"]
    if device.type == "cuda":
        result["peak_memory_gib_while_transcribing"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        # what the card must have: tensors plus the allocator's cached blocks and the graphs' pools
        result["peak_reserved_gib_while_transcribing"] = round(torch.cuda.max_memory_reserved(device) / 2**30, 2)
    weight_bytes = step_weight_bytes(engine)
    result["step_weight_gb"] = round(weight_bytes / 1e9, 2)
    if bandwidth:
        floor = weight_bytes / bandwidth * 1000.0
        result["floor_ms_per_step"] = round(floor, 2)
        result["step_to_floor_ratio"] = round(result["step_ms_p50"] / floor, 2)
    result["kernels"] = sorted({q.kernel(device) for q in _quantized_weights(engine)}) or ["bf16" if mode == "bf16" else mode]
    if mode in ("fp8", "int8", "int4"):
        result["kernel_check"] = kernel_check(engine)
    if device.type == "cuda":
        result["profile"] = kernel_profile(engine, audio)
    if engine.denoiser.use_graphs:
        result["graph_check"] = graph_check(engine, audio, max(2, runs // 3))
    if engine.denoiser.compiled is not None:
        result["compile_check"] = compile_check(engine, audio)
    for batch in batches:
        result[f"batch_{batch}"] = batched_runs(engine, audio, batch, max(2, runs // 2))
    result["runs"] = runs
    result["seconds"] = round(time.perf_counter() - started, 1)
    del engine
    _free(device)
    return result


def whisper_peer(name: str, device: torch.device, runs: int, *, tiny: bool = False, compiled: bool = False) -> dict:
    """Autoregressive Whisper of `name`'s shape (`tiny`: a 1-layer one), random weights: features,
    encoder and exactly 40 greedy tokens. `compiled`: transformers' own fast path for it, a static
    cache with the decoder forward compiled by generate() (CUDA graphs, mode "reduce-overhead"; on
    other devices forced on); the first call's seconds, which include compiling, are `first_call_s`."""
    shape = dict(WHISPER_SHAPES[name])
    if tiny:
        shape.update(d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
                     encoder_ffn_dim=64, decoder_ffn_dim=64)
    config = WhisperConfig(**shape, max_target_positions=448)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    with torch.device(device):
        model = WhisperForConditionalGeneration._from_config(config, dtype=dtype).eval()
    model.generation_config.update(begin_suppress_tokens=None, suppress_tokens=None, forced_decoder_ids=None)
    fast: dict = {}
    if compiled:
        compile_config = CompileConfig()
        compile_config._compile_all_devices = True  # transformers compiles on CUDA by itself; the CPU smoke test needs this
        fast = dict(cache_implementation="static", compile_config=compile_config)
    extractor = WhisperFeatureExtractor(feature_size=config.num_mel_bins)
    audio = clip()
    times, first_call_s = [], 0.0
    for i in range(runs + 1):
        _sync(device)
        start = time.perf_counter()
        features = extractor(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt", device=str(device)).input_features
        with torch.inference_mode():
            out = model.generate(
                features.to(device, dtype), max_new_tokens=WHISPER_NEW_TOKENS, min_new_tokens=WHISPER_NEW_TOKENS, do_sample=False,
                **fast,
            )
        _sync(device)
        if i:  # the first call is the warm-up
            times.append((time.perf_counter() - start) * 1000.0)
        else:
            first_call_s = time.perf_counter() - start
    del model
    _free(device)
    return {"whisper_ar_ms_p50": _p(times, 50), "whisper_ar_ms_p95": _p(times, 95), "new_tokens": int(out.shape[1]), "runs": runs,
            "first_call_s": round(first_call_s, 1)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes instead of the real ones (smoke test)")
    parser.add_argument("--modes", help="comma-separated quantizations (default: bf16,fp8,int8,int4 on GPU, fp32,int8,int4 on CPU)")
    parser.add_argument("--runs", type=int, default=10, help="timed runs per step count (default 10)")
    parser.add_argument("--step-counts", default="8,16", help="denoising step counts to time (default 8,16)")
    parser.add_argument("--batches", default="4,8", help="server batch sizes to time at 8 steps ('' for none)")
    parser.add_argument("--whisper", default="whisper-small,whisper-large-v3-turbo", help="Whisper peers ('' for none)")
    parser.add_argument("--whisper-compile", action=argparse.BooleanOptionalAction, default=True,
                        help="also time each Whisper peer with a static cache, compiled (default on)")
    parser.add_argument("--compile", choices=("off", "on", "both"), default="off",
                        help="decoder layers compiled by Inductor: without (off), with (on), or each mode both ways (as MODE+compile)")
    parser.add_argument("--parts", help="comma-separated parts to run in this order instead (MODE, MODE+compile, MODE+triton, fp8+triton-experts, "
                        "PEER, PEER+static-compile), for a device session that has time for only some")
    parser.add_argument("--budget-s", type=float, default=420.0, help="skip parts that would start after this many seconds")
    parser.add_argument("--out", type=Path, help="also write the JSON here (rewritten after every part)")
    parser.add_argument("--json", action="store_true", help="print the JSON report")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    modes = args.modes.split(",") if args.modes else (["bf16", "fp8", "int8", "int4"] if device.type == "cuda" else ["fp32", "int8", "int4"])
    config = tiny_backbone_config() if args.tiny else real_backbone_config()
    step_counts = tuple(int(n) for n in args.step_counts.split(","))
    batches = tuple(int(n) for n in args.batches.split(",") if n)
    report: dict = {
        "machine": machine_info(),
        "command": "python benchmarks/gpu_real_shape.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "shape": "tiny" if args.tiny else "diffusiongemma-26B-A4B + whisper-small (random weights)",
        "clip_seconds": CLIP_SECONDS,
        "modes": {},
        "whisper_peer": {},
    }
    if device.type == "cuda":
        report["machine"]["driver"] = _driver()
    started = time.perf_counter()
    bandwidth = copy_bandwidth(device)
    report["copy_bandwidth_tb_s"] = round(bandwidth / 1e12, 3) if bandwidth else None

    def part(table: dict, key: str, run: Callable[[], dict], need_bytes: int = 0) -> None:
        if time.perf_counter() - started > args.budget_s:
            table[key] = {"skipped": f"time budget of {args.budget_s:.0f} s used up"}
        elif device.type == "cuda" and need_bytes > torch.cuda.mem_get_info(device)[0]:
            table[key] = {"skipped": f"needs ~{need_bytes / 2**30:.0f} GiB"}
        else:
            try:
                table[key] = run()
            except torch.cuda.OutOfMemoryError as exc:
                table[key] = {"skipped": f"out of memory: {str(exc).splitlines()[0]}"}
                _free(device)
            except Exception as exc:  # a report with the failure beats no report: the other parts still run
                table[key] = {"error": f"{type(exc).__name__}: {str(exc)[:500]}", "traceback": traceback.format_exc()[-3000:]}
                _free(device)
        print(f"{key}: {json.dumps(table[key])}", file=sys.stderr, flush=True)
        if args.out:
            args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")

    if args.parts:
        order = args.parts.split(",")
    else:  # in order of what the report needs most, since the budget skips the tail: every mode as the
        # worker runs it by default, the peers, then the slow-to-prepare compiled variants
        variants = {"off": ("",), "on": ("+compile",), "both": ("", "+compile")}[args.compile]
        peers = list(filter(None, args.whisper.split(",")))
        order = [mode + variants[0] for mode in modes] + peers + [mode + v for v in variants[1:] for mode in modes]
        order += [name + "+static-compile" for name in peers] if args.whisper_compile else []
    for key in order:
        name, _, variant = key.partition("+")
        if name in WHISPER_SHAPES:
            part(report["whisper_peer"], key, lambda: whisper_peer(name, device, max(3, args.runs // 2), tiny=args.tiny,
                                                                   compiled=variant == "static-compile"))
        else:
            need = max(estimate_bytes(config, name), estimate_bytes(config, "bf16"))  # built in bf16 first
            def run_mode(name=name, variant=variant) -> dict:
                with without_torch_grouped_kernels(variant == "triton"), triton_fp8_experts(variant == "triton-experts"):
                    return measure(name, device, tiny=args.tiny, runs=args.runs, step_counts=step_counts, bandwidth=bandwidth,
                                   batches=batches, compile_layers=variant == "compile")

            part(report["modes"], key, run_mode, need)
    report["seconds"] = round(time.perf_counter() - started, 1)
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    if args.json:
        print(text)
    return report


def _quantized_weights(engine: DiffusionEngine):
    from app.engine.diffusion.quantization import QuantizedWeight

    return [m for m in engine.model.backbone.modules() if isinstance(m, QuantizedWeight)]


def _p(values: list[float], q: int) -> float:
    ordered = sorted(values)
    if q == 50:
        return round(statistics.median(ordered), 1)
    return round(ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))], 1)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _memory_gib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    _free(device)
    return round(torch.cuda.memory_allocated(device) / 2**30, 2)


def _driver() -> str | None:
    try:
        import subprocess

        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


if __name__ == "__main__":
    main()
