"""The prompt around the audio: token ids from the template, and embeddings with the audio scattered in.

The template (from the adapter config) is split at `{audio}`. Everything up to and including the
audio slots is the *prefix*: we embed it ourselves, put the projector's audio embeddings into the
slots, and prefill the backbone's KV cache from those embeddings. The text after the slots is the
*tail*: it goes to `DiffusionGemmaForBlockDiffusion.generate()` as ordinary `input_ids`, which
encodes it on top of the cache and then denoises the canvas.

An adapter trained with the speaker's vocabulary marks where it goes with `{context}` and words it
with the config's `context_template`; without both, the vocabulary is not used (config.py says why).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from app.errors import UserError

AUDIO_SLOT = "{audio}"
LANGUAGE_SLOT = "{language}"
CONTEXT_SLOT = "{context}"
# The most tokens the vocabulary may take in the prompt; entries past it are dropped whole, from the end.
CONTEXT_TOKENS = 128


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

    def __init__(self, tokenizer: PreTrainedTokenizerBase, template: str, audio_token_id: int, audio_slots: int,
                 context_template: str | None = None) -> None:
        if context_template is not None and template.count(CONTEXT_SLOT) != 1:
            raise UserError(
                f"The adapter sets context_template, so its prompt_template must contain {CONTEXT_SLOT} exactly once; "
                f"it has {template.count(CONTEXT_SLOT)}.",
                code="bad_model",
            )
        self.context_template = context_template
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

    def build(self, language_name: str, audio_slots: int | None = None, vocabulary: Sequence[str] = ()) -> PromptIds:
        """Prompt ids for `language_name`, with `audio_slots` audio tokens (default: the full window's) and
        the vocabulary in the context slot, where the adapter has one."""
        slots = self.audio_slots if audio_slots is None else audio_slots
        context = self.context(vocabulary)

        def fill(part: str) -> list[int]:
            return self._ids(part.replace(LANGUAGE_SLOT, language_name).replace(CONTEXT_SLOT, context))

        before, after = fill(self.before), fill(self.after)
        return PromptIds(prefix=before + [self.audio_token_id] * slots, tail=after, first_position=slots - self.audio_slots)

    def context(self, vocabulary: Sequence[str]) -> str:
        """The text of the context slot: the context template around the entries that fit, or ""."""
        entries = list(dict.fromkeys(e.strip() for e in vocabulary if e and e.strip()))
        if self.context_template is None or not entries:
            return ""
        text = ""
        for count in range(1, len(entries) + 1):
            candidate = ", ".join(entries[:count])
            if len(self._ids(candidate)) > CONTEXT_TOKENS:
                break
            text = self.context_template.replace("{vocabulary}", candidate)
        return text

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
