"""The diffusion engine: diffusion-gemma-asr-small (Whisper encoder + projector + LoRA on DiffusionGemma).

Modules, in the order a transcription uses them: `config` (adapter config and its assumptions),
`chunking`, `audio_encoder`, `projector`, `prompt`, `prefill` (with `kv_windows`, `rotary_memo`),
`denoising` (with its fast path: `graphs`, `softcap`, `compiled_layers`), `engine`; the layers'
fused kernels on CUDA GPUs: `fused_norm`, `fused_layer`, `fused_attention`, `fused_mlp`,
`expert_routing`, `stacking`; loading: `loading`, `lora`, `weights`, `quantization` (its GPU
products: `expert_kernels`); tests and benchmarks: `tiny` (writes a tiny random checkpoint).
"""

from app.engine.diffusion.engine import DiffusionEngine

__all__ = ["DiffusionEngine"]
