"""The prompt around the audio: token ids from the template, and embeddings with the audio scattered in.

The template (from the adapter config) is split at `{audio}`. Everything up to and including the
audio slots is the *prefix*: we embed it ourselves, put the projector's audio embeddings into the
slots, and prefill the backbone's KV cache from those embeddings. The text after the slots is the
*tail*: it goes to `DiffusionGemmaForBlockDiffusion.generate()` as ordinary `input_ids`, which
encodes it on top of the cache and then denoises the canvas.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from app.errors import UserError

AUDIO_SLOT = "{audio}"
LANGUAGE_SLOT = "{language}"


@dataclass(frozen=True)
class PromptIds:
    """Token ids of one prompt: `prefix` ends with the audio slots, `tail` follows them.

    `first_position` is the prefix's first position id. With fewer audio slots than the full window
    has, the prefix starts that many positions earlier (below zero), so every token keeps the
    distance to the audio it would have had with all slots: the tail and the canvas sit as far from
    the start of the speech as in the full window, whatever the speech's length. (RoPE reads only
    distances; dropping the padding slots then saves their compute without moving anything.)
    """

    prefix: list[int]
    tail: list[int]
    first_position: int = 0

    def prefix_positions(self) -> list[int]:
        return list(range(self.first_position, self.first_position + len(self.prefix)))


class PromptBuilder:
    """Turns a language name into prompt ids, with `audio_slots` copies of the audio token."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, template: str, audio_token_id: int, audio_slots: int) -> None:
        if template.count(AUDIO_SLOT) != 1:
            raise UserError(
                f"The adapter's prompt_template must contain {AUDIO_SLOT} exactly once; it has {template.count(AUDIO_SLOT)}.",
                code="bad_model",
            )
        self.before, self.after = template.split(AUDIO_SLOT)
        if not self.after.strip():
            raise UserError(
                f"The adapter's prompt_template needs text after {AUDIO_SLOT} (for example the model turn marker).",
                code="bad_model",
            )
        self.tokenizer = tokenizer
        self.audio_token_id = audio_token_id
        self.audio_slots = audio_slots

    def build(self, language_name: str, audio_slots: int | None = None) -> PromptIds:
        """Prompt ids for `language_name`, with `audio_slots` audio tokens (default: the full window's)."""
        slots = self.audio_slots if audio_slots is None else audio_slots
        before = self._ids(self.before.replace(LANGUAGE_SLOT, language_name))
        after = self._ids(self.after.replace(LANGUAGE_SLOT, language_name))
        return PromptIds(prefix=before + [self.audio_token_id] * slots, tail=after, first_position=slots - self.audio_slots)

    def _ids(self, text: str) -> list[int]:
        # The template spells out special tokens such as <bos>, so the tokenizer must not add its own.
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])


def embed_prefix(embed_tokens: torch.nn.Module, prefix_ids: torch.Tensor, audio: torch.Tensor, audio_token_id: int) -> torch.Tensor:
    """Embed `prefix_ids` (batch, length) and replace the audio slots by `audio` (batch, slots, hidden).

    The backbone's embedding module already applies Gemma's sqrt(hidden) scale, so the audio
    embeddings replace finished input embeddings, as Gemma's own multimodal embedders do.
    """
    embeds = embed_tokens(prefix_ids)
    slots = (prefix_ids == audio_token_id).unsqueeze(-1)
    if int(slots.sum()) != audio.shape[0] * audio.shape[1]:
        raise ValueError(f"{int(slots.sum())} audio slots for {audio.shape[0] * audio.shape[1]} audio embeddings")
    return embeds.masked_scatter(slots, audio.to(embeds.dtype))
