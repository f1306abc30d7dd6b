"""Load the adapter and the frozen parts it names, in the order that keeps memory and errors sane.

1. The adapter folder (local or Hub) and its `asr_config.json`; backbone and encoder locations come
   from the spec (CLI flags) first, then from the config (paths relative to the adapter folder).
2. The quantization: `auto` looks at free GPU memory before anything big is loaded.
3. The backbone on its final device (bf16/fp32) or on the CPU (quantized modes, moved layer by layer
   while quantizing), then the LoRA with a strict weight check (the decoder's merged into the
   weights), then the unused vision tower is dropped.
4. Whisper (features + encoder, + decoder when present), the projector with a strict weight check,
   the tokenizer and the prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoTokenizer, DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion, PreTrainedTokenizerBase
from transformers.models.diffusion_gemma.generation_diffusion_gemma import EntropyBoundSamplerConfig

from app.engine.devices import out_of_memory_as_user_error, pick_device
from app.engine.diffusion.audio_encoder import WhisperAudioEncoder
from app.engine.diffusion.config import CONFIG_FILE, AdapterConfig
from app.engine.diffusion.lora import apply_lora, merge_decoder_lora
from app.engine.diffusion.projector import AudioProjector, load_projector
from app.engine.diffusion.prompt import PromptBuilder
from app.engine.diffusion.quantization import QUANTIZED_MODES, choose_quantization, compute_dtype, quantize_backbone
from app.engine.diffusion.weights import report_mismatch
from app.engine.model_source import resolve_model
from app.errors import UserError


@dataclass
class DiffusionModel:
    """Everything `DiffusionEngine` runs: the loaded parts and the choices made while loading."""

    config: AdapterConfig
    backbone: DiffusionGemmaForBlockDiffusion
    audio: WhisperAudioEncoder
    projector: AudioProjector
    tokenizer: PreTrainedTokenizerBase
    prompt: PromptBuilder
    device: torch.device
    quantization: str


def load_model(spec) -> DiffusionModel:
    """Load what `spec` (an EngineSpec) names; every mismatch becomes a UserError saying what to fix."""
    adapter_dir = resolve_model(spec.model, what="diffusion adapter")
    if not (adapter_dir / CONFIG_FILE).is_file() and (adapter_dir / "adapter" / CONFIG_FILE).is_file():
        adapter_dir = adapter_dir / "adapter"  # a checkpoint folder holding adapter/ and backbone/ side by side
    config = AdapterConfig.from_dir(adapter_dir)
    backbone_dir = _resolve_part(spec.backbone or config.backbone, adapter_dir, "DiffusionGemma backbone")
    encoder_dir = _resolve_part(spec.encoder or config.encoder, adapter_dir, "Whisper encoder")
    device = pick_device(spec.device)
    mode = choose_quantization(spec.quantization, device, _backbone_config(backbone_dir), compiled=spec.compile)
    dtype = compute_dtype(mode, device)
    with out_of_memory_as_user_error("loading the diffusion model"):
        backbone = load_backbone(backbone_dir, adapter_dir / config.lora_dir, config, mode, device, dtype)
        audio = WhisperAudioEncoder.load(encoder_dir, device, dtype)
        hidden = backbone.config.get_text_config().hidden_size
        projector = load_projector(adapter_dir / config.projector_file, config.projector, audio.width, hidden)
        projector = projector.to(device, dtype)
    tokenizer = _load_tokenizer(config, adapter_dir, backbone_dir)
    slots = projector.output_length(audio.frames)
    if config.audio_slots is not None and config.audio_slots != slots:
        raise UserError(
            f"asr_config.json sets audio_slots to {config.audio_slots}, but the projector makes {slots} audio "
            "embeddings per 30 s window; fix audio_slots or the projector section.",
            code="bad_model",
        )
    prompt = PromptBuilder(tokenizer, config.prompt_template, config.audio_token_id, slots, config.context_template)
    return DiffusionModel(config, backbone, audio, projector, tokenizer, prompt, device, mode)


def load_backbone(
    folder: Path,
    lora_dir: Path,
    config: AdapterConfig,
    mode: str,
    device: torch.device,
    dtype: torch.dtype,
) -> DiffusionGemmaForBlockDiffusion:
    """The frozen DiffusionGemma with the adapter's LoRA, quantized per `mode`, on `device`, in eval mode."""
    place = {"": str(device)} if mode not in QUANTIZED_MODES else None  # quantized: CPU first, see quantize_backbone
    try:
        backbone, info = DiffusionGemmaForBlockDiffusion.from_pretrained(
            folder, dtype=dtype, device_map=place, output_loading_info=True
        )
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        if isinstance(exc, torch.cuda.OutOfMemoryError):
            raise
        raise UserError(
            f"The DiffusionGemma backbone in {folder} could not be loaded ({_first_line(exc)}); it may be incomplete: "
            "download it again or point --backbone at another folder.",
            code="bad_model",
        ) from exc
    report_mismatch(
        "DiffusionGemma backbone",
        folder,
        sorted(info["missing_keys"]),
        sorted(info["unexpected_keys"]),
        sorted(str(m) for m in info["mismatched_keys"]),
        hint="Point --backbone at the DiffusionGemma checkpoint the adapter was trained on.",
    )
    if config.canvas_length is not None:
        backbone.config.canvas_length = config.canvas_length
    apply_generation_overrides(backbone, config.generation)
    apply_lora(backbone, lora_dir, config.lora_encoder)
    if config.merge_lora:
        merge_decoder_lora(backbone)  # before quantizing: the merged weights are what gets quantized
    # Speech never sends images: the vision tower (and its projection) would only take memory.
    backbone.model.encoder.vision_tower = None
    backbone.model.encoder.embed_vision = None
    quantize_backbone(backbone, mode, device)
    return backbone.eval()


def apply_generation_overrides(backbone: DiffusionGemmaForBlockDiffusion, overrides: dict) -> None:
    """Apply the adapter's `generation` settings to the backbone's DiffusionGemmaGenerationConfig."""
    values = dict(overrides)
    if "entropy_bound" in values:
        values["sampler_config"] = EntropyBoundSamplerConfig(entropy_bound=float(values.pop("entropy_bound")))
    try:
        unknown = backbone.generation_config.update(**values)
    except ValueError as exc:
        raise UserError(f"The adapter's generation settings are invalid: {exc}.", code="bad_model") from exc
    if unknown:
        raise UserError(
            f"asr_config.json `generation` has unknown keys: {', '.join(sorted(unknown))}; use entropy_bound, "
            "t_min, t_max, stability_threshold, confidence_threshold, eos_token_id or pad_token_id.",
            code="bad_model",
        )


def _backbone_config(folder: Path) -> DiffusionGemmaConfig:
    try:
        return DiffusionGemmaConfig.from_pretrained(folder)
    except (OSError, ValueError) as exc:
        raise UserError(
            f"{folder} is not a DiffusionGemma model folder ({_first_line(exc)}); point --backbone at one "
            "(for example google/diffusiongemma-26B-A4B-it).",
            code="bad_model",
        ) from exc


def _resolve_part(name: str, adapter_dir: Path, what: str) -> Path:
    """A folder relative to the adapter wins over a Hub id of the same spelling."""
    local = adapter_dir / name
    if not Path(name).is_absolute() and local.is_dir():
        return local.resolve()
    return resolve_model(name, what=what)


def _load_tokenizer(config: AdapterConfig, adapter_dir: Path, backbone_dir: Path) -> PreTrainedTokenizerBase:
    if config.tokenizer is not None:
        folder = _resolve_part(config.tokenizer, adapter_dir, "tokenizer")
    elif (adapter_dir / "tokenizer.json").is_file() or (adapter_dir / "tokenizer_config.json").is_file():
        folder = adapter_dir
    else:
        folder = backbone_dir
    try:
        return AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as exc:
        raise UserError(
            f"No usable tokenizer in {folder} ({_first_line(exc)}); set `tokenizer` in asr_config.json.",
            code="bad_model",
        ) from exc


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
