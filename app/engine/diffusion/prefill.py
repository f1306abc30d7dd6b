"""A dictation's prompt as the backbone sees it, and its prefill into the KV cache.

The prompt arrives as embeddings (the audio in its slots) up to the end of the audio, then as token
ids: `generate()` cannot prefill embeddings, so the prefix is prefilled from them here, then the
tail on top, with the positions and attention masks `generate()` itself would build. The denoiser
(`denoising.py`) runs this eagerly or captures it in a CUDA graph (`graphs.py`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from transformers import DiffusionGemmaForBlockDiffusion
from transformers.cache_utils import DynamicCache


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


def prefill(backbone: DiffusionGemmaForBlockDiffusion, prompt: Prompt, cache: DynamicCache, masks: tuple | None = None) -> DynamicCache:
    """Fill `cache` as `generate()` would: the prefix from its embeddings, then the tail on top of it.

    `masks` (from `prefill_masks`, computed before the cache is touched) are the two passes'
    attention masks; graphs pass them precomputed, since building masks copies host data.
    """
    prefix_mask, tail_mask = masks if masks is not None else prefill_masks(backbone, prompt)
    encoder = backbone.model.encoder
    encoder(inputs_embeds=prompt.prefix_embeds, attention_mask=prefix_mask, position_ids=prompt.prefix_positions, cache=cache)
    encoder(input_ids=prompt.tail_ids, attention_mask=tail_mask, cache=cache, position_ids=prompt.tail_positions)
    return cache


def prefill_masks(backbone: DiffusionGemmaForBlockDiffusion, prompt: Prompt) -> tuple:
    """The prefix pass's causal masks, and the tail's from transformers' `_prepare_encoder_inputs`
    (which reads the cache's length, so it gets a scratch cache holding the prefix's shape)."""
    text_config = backbone.config.get_text_config(decoder=True)
    encoder = backbone.model.encoder
    scratch = DynamicCache(config=text_config)
    prefix_mask = encoder.create_masks_for_generate(
        config=backbone.config.get_text_config(),
        inputs_embeds=prompt.prefix_embeds,
        attention_mask=None,
        cache=scratch,
        position_ids=prompt.prefix_positions,
    )
    shape = (prompt.batch, 1, prompt.prefix_embeds.shape[1], 1)
    for layer_cache in scratch.layers:  # the prefix's length is all the tail's masks read from the cache
        filler = prompt.prefix_embeds.new_zeros(shape)
        layer_cache.update(filler, filler)
    _, tail_mask = backbone._prepare_encoder_inputs(
        input_ids=prompt.tail_ids,
        attention_mask=prompt.attention_mask,
        encoder_position_ids=prompt.tail_positions,
        cache=scratch,
        is_prefill=True,
        canvas_length=backbone.config.canvas_length,
        batch_size=prompt.batch,
    )
    return prefix_mask, tail_mask
