"""Prefill the backbone's KV cache from embeddings, then let transformers' `generate()` denoise the canvas.

Everything in the denoising loop is DiffusionGemma's own: the random initial canvas, the
self-conditioning, the linear temperature schedule, the entropy-bound sampler and the
stable-and-confident early exit. This module only prepares the cache (which `generate()` cannot
build from embeddings), chooses the knobs (steps, early exit, one canvas), and listens: a streamer's
`put_draft` hook sees the argmax canvas after every step, which gives the live preview and the
per-step timings.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from transformers import DiffusionGemmaForBlockDiffusion
from transformers.cache_utils import DynamicCache
from transformers.generation.streamers import BaseStreamer


@dataclass
class DenoiseResult:
    """The final canvases (batch, canvas_length), steps run, and milliseconds spent."""

    canvases: torch.Tensor
    steps_used: int
    prefill_ms: float
    step_ms: list[float] = field(default_factory=list)


class _StepListener(BaseStreamer):
    """Times each denoising step (decoder start -> draft) and forwards the draft canvas."""

    def __init__(self, decoder: torch.nn.Module, on_draft: Callable[[int, torch.Tensor], None] | None) -> None:
        self.on_draft = on_draft
        self.on_gpu = decoder.device.type == "cuda"
        self.step_starts: list[float] = []
        self.step_ms: list[float] = []
        self._hook = decoder.register_forward_pre_hook(self._decoder_starts)

    def _decoder_starts(self, module, args) -> None:
        if self.on_gpu:  # let queued prefill or sampling work finish, so it is not billed to this step
            torch.cuda.synchronize()
        self.step_starts.append(time.perf_counter())

    def put_draft(self, value: torch.Tensor) -> None:
        # `value` was copied to the CPU by generate(), so the step's GPU work is finished here.
        self.step_ms.append((time.perf_counter() - self.step_starts[-1]) * 1000.0)
        if self.on_draft is not None:
            self.on_draft(len(self.step_ms), value)

    def put(self, value: torch.Tensor) -> None:
        """The prompt and the finished canvas also arrive here; the drafts say all we need."""

    def end(self) -> None:
        self._hook.remove()


def denoise(
    backbone: DiffusionGemmaForBlockDiffusion,
    prefix_embeds: torch.Tensor,
    tail_ids: torch.Tensor,
    *,
    steps: int,
    seed: int,
    first_position: int = 0,
    early_exit: bool = True,
    generation_overrides: dict | None = None,
    on_draft: Callable[[int, torch.Tensor], None] | None = None,
) -> DenoiseResult:
    """Denoise one canvas per batch row, conditioned on `prefix_embeds` then `tail_ids`.

    The prefix's position ids start at `first_position` (see `PromptIds`); the tail and the canvas
    follow it as `generate()` numbers them, after the cache's length.
    The global RNG is seeded with `seed` inside a fork, so results are reproducible and the caller's
    random state is left alone. Without `early_exit` exactly `steps` decoder passes run.
    """
    device = prefix_embeds.device
    batch, prefix_len = prefix_embeds.shape[:2]
    canvas_length = backbone.config.canvas_length
    start = time.perf_counter()
    cache = DynamicCache(config=backbone.config.get_text_config(decoder=True))
    positions = torch.arange(prefix_len, device=device).unsqueeze(0) + first_position
    backbone.model.encoder(inputs_embeds=prefix_embeds, position_ids=positions, cache=cache)
    listener = _StepListener(backbone.model.decoder, on_draft)
    knobs = dict(generation_overrides or {})
    if not early_exit:
        knobs.update(stability_threshold=None, confidence_threshold=None)
    attention_mask = torch.ones(batch, prefix_len + tail_ids.shape[1], dtype=torch.long, device=device)
    gpus = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=gpus):
        torch.manual_seed(seed)
        try:
            out = backbone.generate(
                tail_ids,
                cache=cache,
                attention_mask=attention_mask,
                streamer=listener,
                max_denoising_steps=steps,
                max_new_tokens=canvas_length,
                max_length=None,
                **knobs,
            )
        finally:
            listener.end()
    prefill_ms = (listener.step_starts[0] - start) * 1000.0 if listener.step_starts else 0.0
    return DenoiseResult(
        canvases=out.sequences[:, -canvas_length:],
        steps_used=len(listener.step_ms),
        prefill_ms=prefill_ms,
        step_ms=listener.step_ms,
    )
