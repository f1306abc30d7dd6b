"""A dictation's prompt as the backbone sees it, and its prefill into the KV cache.

The prompt arrives as embeddings (the audio in its slots) up to the end of the audio, then as token
ids: `generate()` cannot prefill embeddings, so the prompt is prefilled here, in one pass over the
prefix's embeddings and the tail's, with the positions `generate()` itself would give them. The
denoiser (`denoising.py`) runs this eagerly or captures it in a CUDA graph (`graphs.py`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from transformers import DiffusionGemmaForBlockDiffusion
from transformers.cache_utils import DynamicCache

from app.engine.diffusion import kv_windows, rotary_memo


@dataclass
class Prompt:
    """One batch of prompts: the prefix as embeddings, the tail as ids, and where everything sits."""

    prefix_embeds: torch.Tensor
    prefix_positions: torch.Tensor
    tail_ids: torch.Tensor
    tail_positions: torch.Tensor
    attention_mask: torch.Tensor  # (batch, prompt length), all True
    decoder_attention_mask: torch.Tensor  # the same with the canvas after it
    canvas_positions: torch.Tensor

    def __post_init__(self) -> None:
        rotary_memo.pin(self.canvas_positions)  # every step reads them, none writes them

    @property
    def batch(self) -> int:
        return self.prefix_embeds.shape[0]

    @property
    def device(self) -> torch.device:
        return self.prefix_embeds.device

    @property
    def shape(self) -> tuple[int, int, int]:
        """(batch, prefix length, tail length): what a captured graph or a compiled layer is specific to."""
        return self.batch, self.prefix_embeds.shape[1], self.tail_ids.shape[1]

    def copy(self) -> "Prompt":
        """This prompt with tensors of its own (the caller's may be reused or freed)."""
        return Prompt(**{f.name: getattr(self, f.name).clone() for f in dataclasses.fields(self)})


def prefill(backbone: DiffusionGemmaForBlockDiffusion, prompt: Prompt, cache: DynamicCache, mask: dict | None = None) -> DynamicCache:
    """Fill `cache` with the whole prompt in one encoder pass: the prefix's embeddings, then the
    tail's ids embedded as the encoder embeds ids, at the positions `generate()` gives them.

    `generate()` itself would take two passes, the prefix and then the tail on top of its cache;
    each pass reads the weights of every layer (and of every expert some token is routed to), so on
    a GPU the tail's few tokens cost nearly a full forward. One causal pass over both attends to the
    same keys (the same cache to float rounding; `denoise_with_generate` keeps the two passes as
    the reference the tests compare tokens with). `mask` (from `prefill_mask`, computed before the
    cache is touched): graphs pass it precomputed, since building masks copies host data.
    """
    encoder = backbone.model.encoder
    embeds = torch.cat([prompt.prefix_embeds, encoder.get_input_embeddings()(prompt.tail_ids)], dim=1)
    mask = prefill_mask(backbone, prompt) if mask is None else mask
    encoder(inputs_embeds=embeds, attention_mask=mask, position_ids=prompt_positions(prompt), cache=cache)
    if kv_windows.wanted(backbone):  # the decoder's attention then reads the cache and the canvas in place
        kv_windows.open_windows(cache, backbone.config.canvas_length)
    return cache


def prompt_positions(prompt: Prompt) -> torch.Tensor:
    """The prefix's and the tail's position ids, one run (int64, as the encoder's own are)."""
    return torch.cat([prompt.prefix_positions, prompt.tail_positions.to(prompt.prefix_positions.dtype)], dim=1)


def prefill_mask(backbone: DiffusionGemmaForBlockDiffusion, prompt: Prompt) -> dict:
    """The prefill's attention masks by layer type: causal over the whole prompt, as the encoder's own
    `create_masks_for_generate` makes them for an empty cache."""
    length = prompt.prefix_embeds.shape[1] + prompt.tail_ids.shape[1]
    dtype, device = prompt.prefix_embeds.dtype, prompt.device
    return backbone.model.encoder.create_masks_for_generate(
        config=backbone.config.get_text_config(),
        inputs_embeds=torch.empty((prompt.batch, length, 0), dtype=dtype, device=device),  # its shape, dtype and device only
        attention_mask=prompt.attention_mask,
        cache=DynamicCache(config=backbone.config.get_text_config(decoder=True)),
        position_ids=prompt_positions(prompt),
    )
