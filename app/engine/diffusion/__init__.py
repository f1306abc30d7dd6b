"""The diffusion engine: diffusion-gemma-asr-small (Whisper encoder + projector + LoRA on DiffusionGemma).

Modules, in the order a transcription uses them: `config` (adapter config and its assumptions),
`chunking`, `audio_encoder`, `projector`, `prompt`, `prefill`, `denoising` (with its fast path:
`graphs`, `compiled_layers`, `fused_norm`), `engine`; loading: `loading`, `lora`, `weights`,
`quantization` (its GPU products: `expert_kernels`); tests and benchmarks: `tiny` (writes a tiny
random checkpoint).
"""

from app.engine.diffusion.engine import DiffusionEngine

__all__ = ["DiffusionEngine"]
