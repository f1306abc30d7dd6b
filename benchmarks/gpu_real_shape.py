"""GPU memory and speed of the diffusion engine at the real model's shape, random weights, per quantization.

    python benchmarks/gpu_real_shape.py --json --out gpu_real_shape.json          # on an H100/H200
    python benchmarks/gpu_real_shape.py --tiny --device cpu --runs 2 --json       # smoke test, any machine

Builds DiffusionGemma 26B-A4B's configuration (hidden 2816, 30 layers, 128 experts top-8, vocab
262144, canvas 256; a small vision tower, dropped as the loader does) and a whisper-small-shaped
encoder straight on the device with random weights (no checkpoint, no CPU copy), adds a rank-32
LoRA on the attention, quantizes through the production code, and runs the production engine on a
5 s clip. Per mode: memory after load, prefill, ms per denoising step, and the total for 8 and 16
steps (early exit off), p50 over `--runs` runs. Each mode is built in bf16 and then quantized, so
the GPU must hold the bf16 model once (~50 GB: H100 80 GB or larger). A time budget (default 420 s)
skips the remaining modes rather than overrunning.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from peft import LoraConfig, inject_adapter_in_model  # noqa: E402
from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion, WhisperConfig, WhisperFeatureExtractor  # noqa: E402
from transformers.models.whisper.modeling_whisper import WhisperEncoder  # noqa: E402

from app.engine.base import SAMPLE_RATE  # noqa: E402
from app.engine.diffusion.audio_encoder import WhisperAudioEncoder  # noqa: E402
from app.engine.diffusion.config import AdapterConfig, ProjectorConfig  # noqa: E402
from app.engine.diffusion.engine import DiffusionEngine  # noqa: E402
from app.engine.diffusion.loading import DiffusionModel  # noqa: E402
from app.engine.diffusion.projector import AudioProjector  # noqa: E402
from app.engine.diffusion.prompt import PromptBuilder  # noqa: E402
from app.engine.diffusion.quantization import compute_dtype, estimate_bytes, quantize_backbone  # noqa: E402
from app.engine.diffusion.tiny import LORA_TARGETS, TINY_PROJECTOR, tiny_backbone_config, tiny_tokenizer  # noqa: E402
from benchmarks.machine import machine_info  # noqa: E402

CLIP_SECONDS = 5.0


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


def whisper_small_config() -> WhisperConfig:
    return WhisperConfig(d_model=768, encoder_layers=12, encoder_attention_heads=12, encoder_ffn_dim=3072, num_mel_bins=80)


def build_engine(mode: str, device: torch.device, *, tiny: bool) -> DiffusionEngine:
    """The production engine around randomly initialised parts built directly on `device`."""
    dtype = compute_dtype(mode, device)
    tokenizer = tiny_tokenizer()
    audio_token_id = tokenizer.convert_tokens_to_ids("<|audio|>")
    backbone_config = tiny_backbone_config() if tiny else real_backbone_config()
    projector_config = TINY_PROJECTOR if tiny else ProjectorConfig()
    whisper_config = WhisperConfig(d_model=32, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64) if tiny else whisper_small_config()
    with torch.device(device):
        backbone = DiffusionGemmaForBlockDiffusion._from_config(backbone_config, dtype=dtype).eval()
        encoder = WhisperEncoder._from_config(whisper_config, dtype=dtype).eval()
    backbone.generation_config.update(eos_token_id=[1, tokenizer.convert_tokens_to_ids("<turn|>")], pad_token_id=0)
    lora = LoraConfig(r=4 if tiny else 32, lora_alpha=8 if tiny else 64, target_modules=LORA_TARGETS, init_lora_weights=False)
    inject_adapter_in_model(lora, backbone)
    backbone.model.encoder.vision_tower = None
    backbone.model.encoder.embed_vision = None
    quantize_backbone(backbone, mode, device)
    hidden = backbone_config.text_config.hidden_size
    projector = AudioProjector(projector_config, whisper_config.d_model, hidden).to(device, dtype).eval()
    audio = WhisperAudioEncoder(WhisperFeatureExtractor(feature_size=80), encoder, None)
    config = AdapterConfig(audio_token_id=audio_token_id, projector=projector_config)
    prompt = PromptBuilder(tokenizer, config.prompt_template, audio_token_id, projector.output_length(audio.frames))
    return DiffusionEngine(DiffusionModel(config, backbone, audio, projector, tokenizer, prompt, device, mode))


def clip() -> np.ndarray:
    t = np.arange(int(CLIP_SECONDS * SAMPLE_RATE)) / SAMPLE_RATE
    noise = np.random.default_rng(0).standard_normal(t.shape[0]) * 0.02
    return (0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t) + noise).astype(np.float32)


def measure(mode: str, device: torch.device, *, tiny: bool, runs: int, step_counts: tuple[int, ...]) -> dict:
    started = time.perf_counter()
    engine = build_engine(mode, device, tiny=tiny)
    _sync(device)
    result: dict = {"build_s": round(time.perf_counter() - started, 1), "memory_gib_after_load": _memory_gib(device)}
    audio = clip()
    engine.warm_up()
    engine.transcribe(audio, language="en", steps=step_counts[0], early_exit=False)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for steps in step_counts:
        totals, prefills, step_ms = [], [], []
        for _ in range(runs):
            t = engine.transcribe(audio, language="en", steps=steps, early_exit=False)
            assert t.steps_used == steps
            totals.append(t.timings["total"])
            prefills.append(t.timings["prefill"])
            step_ms.extend(t.timings["steps"])
        result[f"total_ms_p50_{steps}_steps"] = round(statistics.median(totals), 1)
        result[f"prefill_ms_p50_{steps}_steps"] = round(statistics.median(prefills), 1)
        result[f"step_ms_p50_{steps}_steps"] = round(statistics.median(step_ms), 1)
    result["prefill_ms_p50"] = result[f"prefill_ms_p50_{step_counts[0]}_steps"]
    result["step_ms_p50"] = result[f"step_ms_p50_{step_counts[-1]}_steps"]
    if device.type == "cuda":
        result["peak_memory_gib_while_transcribing"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    result["runs"] = runs
    result["seconds"] = round(time.perf_counter() - started, 1)
    del engine
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes instead of the real ones (smoke test)")
    parser.add_argument("--modes", help="comma-separated quantizations (default: bf16,fp8,int8,int4 on GPU, fp32,int8,int4 on CPU)")
    parser.add_argument("--runs", type=int, default=10, help="timed runs per step count (default 10)")
    parser.add_argument("--step-counts", default="8,16", help="denoising step counts to time (default 8,16)")
    parser.add_argument("--budget-s", type=float, default=420.0, help="skip modes that would start after this many seconds")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--json", action="store_true", help="print the JSON report")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    modes = args.modes.split(",") if args.modes else (["bf16", "fp8", "int8", "int4"] if device.type == "cuda" else ["fp32", "int8", "int4"])
    config = tiny_backbone_config() if args.tiny else real_backbone_config()
    report: dict = {
        "machine": machine_info(),
        "command": "python benchmarks/gpu_real_shape.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "shape": "tiny" if args.tiny else "diffusiongemma-26B-A4B + whisper-small (random weights)",
        "clip_seconds": CLIP_SECONDS,
        "modes": {},
    }
    started = time.perf_counter()
    for mode in modes:
        if time.perf_counter() - started > args.budget_s:
            report["modes"][mode] = {"skipped": f"time budget of {args.budget_s:.0f} s used up"}
            continue
        if device.type == "cuda":
            free = torch.cuda.mem_get_info(device)[0]
            need = max(estimate_bytes(config, mode), estimate_bytes(config, "bf16"))  # built in bf16 first
            if need > free:
                report["modes"][mode] = {"skipped": f"needs ~{need / 2**30:.0f} GiB, {free / 2**30:.0f} GiB free"}
                continue
        try:
            step_counts = tuple(int(n) for n in args.step_counts.split(","))
            report["modes"][mode] = measure(mode, device, tiny=args.tiny, runs=args.runs, step_counts=step_counts)
        except torch.cuda.OutOfMemoryError as exc:
            report["modes"][mode] = {"skipped": f"out of memory: {str(exc).splitlines()[0]}"}
            gc.collect()
            torch.cuda.empty_cache()
        print(f"{mode}: {report['modes'][mode]}", file=sys.stderr, flush=True)
    report["seconds"] = round(time.perf_counter() - started, 1)
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    if args.json:
        print(text)
    return report


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _memory_gib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    gc.collect()
    torch.cuda.empty_cache()
    return round(torch.cuda.memory_allocated(device) / 2**30, 2)


if __name__ == "__main__":
    main()
