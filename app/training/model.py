"""The micro diffusion ASR model: the production parts at a size a CPU can train.

Same classes as diffusion-gemma-asr-small, smaller: the frozen Whisper tiny.en encoder (its frames
are cached, see dataset.py), the production `AudioProjector` (conv subsampling x8 + linears), a
3-layer DiffusionGemma (hidden 192) with 4 experts and a BPE vocabulary of 4096 trained on the training text,
and a peft LoRA on the attention of both its passes. Unlike the real model, the backbone itself is
trained too: there is no pretrained micro DiffusionGemma to freeze.

`losses()` is the seed's three objectives on one batch:
- diffusion: uniformly random tokens replace a random fraction of the target canvas (DiffusionGemma
  has no mask token; the canvas is the transcript, or with `aligned_canvas` each token at the slot
  where it is spoken), the decoder predicts the clean canvas from the prompt's KV cache, with
  self-conditioning on its own earlier guess half of the time, as `generate()` does on every step;
- autoregressive: the causal encoder pass reads the transcript after the prompt and predicts each
  next token (the same pass fills the cache the decoder reads, cut back to the prompt);
- CTC: the projector's audio embeddings, read through the tied lm_head, must spell the transcript
  (blank = <pad>). Training only: this is what teaches the audio embeddings to look like words.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
from safetensors.torch import load_file
from torch import nn
from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion, PreTrainedTokenizerFast
from transformers.cache_utils import DynamicCache

from app.engine.diffusion.config import DEFAULT_PROMPT_TEMPLATE, ProjectorConfig
from app.engine.diffusion.projector import AudioProjector
from app.engine.diffusion.prompt import PromptBuilder, embed_prefix
from app.engine.diffusion.tiny import LORA_TARGETS, small_backbone_config, tiny_tokenizer
from app.training import alignment

# 4096 BPE tokens make ~1.45 tokens per word of this text (1024 make 2.0). The projector gives 6.25
# audio embeddings per second, and CTC needs at least one per token: at 190 words per minute 1024
# tokens would need more embeddings than the speech has; 4096 leave room.
VOCAB_SIZE = 4096
CANVAS_LENGTH = 48
HIDDEN = 192
# Narrow convolutions: when the first one ran over all 1500 Whisper frames (before speech-only
# slots), at 256 channels it took 40% of a training step on the CPU; 128 halved that.
PROJECTOR = ProjectorConfig(conv_channels=(128, 128, 192), conv_kernel=3, conv_stride=2, linear_hidden=(384,))
LORA = dict(r=8, lora_alpha=16, target_modules=LORA_TARGETS, lora_dropout=0.0)
WHISPER_FRAMES = 1500


def backbone_config(vocab_size: int = VOCAB_SIZE) -> DiffusionGemmaConfig:
    """3 layers (sliding, full, full), hidden 192, 4 experts top-2."""
    text = dict(
        vocab_size=vocab_size,
        hidden_size=HIDDEN,
        intermediate_size=384,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=48,
        global_head_dim=48,
        num_global_key_value_heads=2,
        num_experts=4,
        top_k_experts=2,
        moe_intermediate_size=192,
        # Wider than any prompt + canvas here, so the sliding layers see everything, as they would
        # for a 30 s window at the real model's 1024.
        sliding_window=512,
        layer_types=["sliding_attention", "full_attention", "full_attention"],
    )
    return small_backbone_config(text, CANVAS_LENGTH)


def train_tokenizer(texts: list[str], vocab_size: int = VOCAB_SIZE) -> PreTrainedTokenizerFast:
    """Byte-level BPE on the training text plus the prompt words (any id still decodes to text)."""
    prompt = "Transcribe this English audio. user model"
    return tiny_tokenizer([prompt, *texts], vocab_size)


class MicroASR(nn.Module):
    """Projector + LoRA-wrapped DiffusionGemma, with the three training losses."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerFast,
        encoder_width: int,
        backbone: DiffusionGemmaForBlockDiffusion | None = None,
        *,
        aligned_canvas: bool = False,
    ) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.aligned_canvas = aligned_canvas
        backbone = backbone or DiffusionGemmaForBlockDiffusion(backbone_config(len(tokenizer)))
        backbone.generation_config.update(
            eos_token_id=[tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<turn|>")],
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
        )
        self.peft = get_peft_model(backbone, LoraConfig(**LORA))
        for param in backbone.parameters():  # the micro backbone learns from scratch, LoRA included
            param.requires_grad_(True)
        self.backbone = backbone
        self.projector = AudioProjector(PROJECTOR, encoder_width, HIDDEN)
        self.audio_token_id = tokenizer.convert_tokens_to_ids("<|audio|>")
        self.prompt = PromptBuilder(
            tokenizer, DEFAULT_PROMPT_TEMPLATE, self.audio_token_id, self.projector.output_length(WHISPER_FRAMES)
        )
        self.register_buffer("tail_ids", torch.tensor(self.prompt.build("English").tail), persistent=False)

    @classmethod
    def from_checkpoint(cls, folder: Path, encoder_width: int, *, aligned_canvas: bool = False) -> "MicroASR":
        """Continue training a saved checkpoint (`folder` holds backbone/ and adapter/)."""
        tokenizer = PreTrainedTokenizerFast.from_pretrained(folder / "backbone")
        net = cls(tokenizer, encoder_width, DiffusionGemmaForBlockDiffusion.from_pretrained(folder / "backbone"),
                  aligned_canvas=aligned_canvas)
        lora = load_file(str(folder / "adapter" / "adapter_model.safetensors"))
        result = set_peft_model_state_dict(net.peft, lora)
        if result.unexpected_keys:
            raise ValueError(f"LoRA tensors that do not fit: {result.unexpected_keys[:5]}")
        net.projector.load_state_dict(load_file(str(folder / "adapter" / "projector.safetensors")))
        return net

    @property
    def canvas_length(self) -> int:
        return self.backbone.config.canvas_length

    def longest_chunk_seconds(self) -> float:
        """The longest audio an aligned canvas can write: one position per slot, and one for `<eos>`."""
        return round((self.canvas_length - 1) * PROJECTOR.subsampling * 30.0 / WHISPER_FRAMES, 2)

    def encode_texts(self, texts: list[str]) -> list[list[int]]:
        return [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """lm_head with Gemma's final soft-capping, as `DiffusionGemmaForBlockDiffusion.forward` does."""
        cap = self.backbone.final_logit_softcapping
        logits = self.backbone.lm_head(hidden).float()
        return torch.tanh(logits / cap) * cap if cap else logits

    def losses(
        self, frames: torch.Tensor, frame_counts: list[int], targets: list[list[int]], *, use_ctc: bool = True
    ) -> dict[str, torch.Tensor]:
        """The three losses for encoder `frames` (batch, frames, width), cut after the longest clip's
        speech as the engine cuts them (`trim_audio`), the speech frames of each clip, and its
        transcript token ids."""
        device = frames.device
        batch = frames.shape[0]
        pad, eos = self.tokenizer.pad_token_id, self.tokenizer.eos_token_id
        lengths = torch.tensor([len(t) for t in targets], device=device)

        audio = self.projector(frames)
        embed = self.backbone.get_input_embeddings()
        ids = self.prompt.build("English", audio.shape[1])
        prefix_ids = torch.tensor(ids.prefix, device=device)
        prefix = embed_prefix(embed, prefix_ids.expand(batch, -1), audio, self.audio_token_id)

        # Encoder pass: prompt, then the transcript + <eos> (right-padded) for the autoregressive loss.
        longest = int(lengths.max()) + 1
        ar_ids = torch.full((batch, longest), pad, dtype=torch.long, device=device)
        for row, tokens in enumerate(targets):
            ar_ids[row, : len(tokens) + 1] = torch.tensor([*tokens, eos], device=device)
        context = torch.cat([self.tail_ids.expand(batch, -1), ar_ids], dim=1)
        embeds = torch.cat([prefix, embed(context)], dim=1)
        prompt_len = prefix.shape[1] + self.tail_ids.shape[0]
        # The engine's positions: the prefix from `ids.first_position`, the rest after the cache's length.
        positions = torch.cat([torch.tensor(ids.prefix_positions(), device=device),
                               torch.arange(prefix.shape[1], embeds.shape[1], device=device)])
        cache = DynamicCache(config=self.backbone.config.get_text_config(decoder=True))
        hidden = self.backbone.model.encoder(inputs_embeds=embeds, position_ids=positions[None], cache=cache).last_hidden_state
        # Position prompt_len - 1 + i predicts transcript token i (and <eos> after the last one).
        ar_logits = self._logits(hidden[:, prompt_len - 1 : prompt_len - 1 + longest])
        ar_targets = ar_ids.masked_fill(torch.arange(longest, device=device)[None] > lengths[:, None], -100)
        ar_loss = F.cross_entropy(ar_logits.transpose(1, 2), ar_targets, ignore_index=-100)

        # The decoder must see only the prompt: causal attention made its cache independent of the transcript.
        cache.crop(-longest)
        clean = self.clean_canvas(audio, frame_counts, targets)
        noise_level = torch.rand(batch, 1, device=device).clamp_min(0.05)
        noise_level[torch.rand(batch, device=device) < 0.15] = 1.0  # step one of every decode starts from pure noise
        noisy = torch.where(
            torch.rand(clean.shape, device=device) < noise_level,
            torch.randint_like(clean, self.backbone.config.get_text_config().vocab_size),
            clean,
        )
        decoder = self.backbone.model.decoder
        # Half of the batches first make a guess to condition on (a whole batch at a time: the extra
        # decoder pass is the costliest part of a step, and is skipped for the other half).
        guess = None
        if float(torch.rand(())) < 0.5:
            with torch.no_grad():
                guess = self._logits(decoder(decoder_input_ids=noisy, cache=cache).last_hidden_state)
        out = decoder(decoder_input_ids=noisy, cache=cache, self_conditioning_logits=guess).last_hidden_state
        diffusion_loss = F.cross_entropy(self._logits(out).transpose(1, 2), clean)

        losses = {"diffusion": diffusion_loss, "ar": ar_loss}
        if use_ctc:
            losses["ctc"] = self._ctc(audio, frame_counts, targets)
        return losses

    def clean_canvas(self, audio: torch.Tensor, frame_counts: list[int], targets: list[list[int]]) -> torch.Tensor:
        """The diffusion target of each clip: its transcript from the first position, then `<eos>` to
        the end; or, with `aligned_canvas`, each token at the slot where the CTC head hears it
        (`alignment.first_slots`), `<pad>` between tokens (the engine's detokeniser drops it), then
        `<eos>`. A clip the alignment cannot place keeps the plain layout."""
        pad, eos = self.tokenizer.pad_token_id, self.tokenizer.eos_token_id
        clean = torch.full((len(targets), self.canvas_length), eos, dtype=torch.long, device=audio.device)
        if self.aligned_canvas:
            with torch.no_grad():
                log_probs = self.backbone.lm_head(audio).float().log_softmax(-1).cpu().numpy()
        for row, tokens in enumerate(targets):
            slots = None
            if self.aligned_canvas:
                slots = alignment.first_slots(log_probs[row, : self.projector.output_length(frame_counts[row])], tokens, pad)
            if slots is None or slots[-1] + 1 >= self.canvas_length:
                clean[row, : len(tokens)] = torch.tensor(tokens, device=audio.device)
                continue
            clean[row, : slots[-1] + 1] = pad
            clean[row, torch.tensor(slots, device=audio.device)] = torch.tensor(tokens, device=audio.device)
        return clean

    def ctc_loss(self, frames: torch.Tensor, frame_counts: list[int], targets: list[list[int]]) -> torch.Tensor:
        """CTC alone: the projector and the embedding matrix, without the backbone's layers.

        About eight times cheaper per clip than `losses`, so training starts with it: by the time
        the backbone trains, the audio embeddings already sit near the embeddings of their words,
        and the backbone can read them much as it reads text.
        """
        return self._ctc(self.projector(frames), frame_counts, targets)

    def _ctc(self, audio: torch.Tensor, frame_counts: list[int], targets: list[list[int]]) -> torch.Tensor:
        device = audio.device
        log_probs = self.backbone.lm_head(audio).float().log_softmax(-1).transpose(0, 1)
        flat = torch.tensor([t for tokens in targets for t in tokens], device=device)
        lengths = torch.tensor([len(t) for t in targets], device=device)
        in_lengths = torch.tensor([self.projector.output_length(n) for n in frame_counts], device=device)
        return F.ctc_loss(log_probs, flat, in_lengths, lengths, blank=self.tokenizer.pad_token_id, zero_infinity=True)

    def ctc_parameters(self) -> list[nn.Parameter]:
        """What CTC trains: the projector and the (tied) embedding matrix."""
        return [*self.projector.parameters(), self.backbone.lm_head.weight]
