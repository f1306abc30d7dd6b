"""Write a tiny diffusion ASR checkpoint with random weights, in the adapter layout the loader expects.

    python -m app.engine.diffusion.tiny OUT_DIR [--seed N] [--canvas N] [--encoder WHISPER_DIR] [--full-whisper]

OUT_DIR/backbone  tiny DiffusionGemma (2 layers, hidden 64, 4 experts) from the real config classes,
                  with a small byte-level BPE tokenizer holding Gemma 4's special tokens
OUT_DIR/encoder   tiny Whisper encoder (or a full tiny Whisper with --full-whisper, for language ID);
                  with --encoder the adapter points at an existing Whisper folder instead
OUT_DIR/adapter   asr_config.json (pointing at ../backbone and ../encoder), projector.safetensors,
                  and a peft LoRA (adapter_config.json + adapter_model.safetensors)

Tests and benchmarks load it through the production loader; nothing here is used at run time.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    DiffusionGemmaConfig,
    DiffusionGemmaForBlockDiffusion,
    PreTrainedTokenizerFast,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
)
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from app.engine.base import LANGUAGES
from app.engine.diffusion.config import ProjectorConfig
from app.engine.diffusion.projector import AudioProjector
from app.engine.diffusion.saving import write_adapter

# Ids 0-2 as in Gemma (pad, eos, bos); the rest are the markers the default prompt template uses.
SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<|turn>", "<turn|>", "<|audio>", "<|audio|>", "<audio|>"]
VOCAB_SIZE = 512
_CORPUS = [
    "Transcribe this English audio. Transcribe this German audio. Transcribe this French audio.",
    "Transcribe this Spanish audio. Transcribe this Hindi audio. Transcribe this Mandarin audio.",
    "user model the quick brown fox jumps over the lazy dog while the cat sleeps in the warm sun.",
    "Hold a hotkey, speak, release: the words appear in the focused window of the desktop.",
    "Please send the report to the team before noon tomorrow and call me when you are done.",
]
TINY_PROJECTOR = ProjectorConfig(conv_channels=(32, 32, 32), conv_kernel=3, conv_stride=2, linear_hidden=(64,))
TINY_INIT_STD = 0.3
LORA_TARGETS = r".*(language_model|decoder)\.layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj|o_proj)"


def write_tiny_checkpoint(
    out_dir: Path,
    *,
    seed: int = 0,
    canvas_length: int = 16,
    encoder: Path | None = None,
    full_whisper: bool = False,
) -> Path:
    """Write the three folders under `out_dir` and return the adapter folder."""
    out_dir = Path(out_dir)
    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    backbone = _backbone(tokenizer, canvas_length)
    backbone.save_pretrained(out_dir / "backbone")
    tokenizer.save_pretrained(out_dir / "backbone")

    if encoder is None:
        encoder_ref, width = "../encoder", write_tiny_whisper(out_dir / "encoder", full_whisper)
    else:
        encoder_ref = str(Path(encoder).resolve())
        width = WhisperConfig.from_pretrained(encoder).d_model

    hidden = backbone.config.text_config.hidden_size
    projector = AudioProjector(TINY_PROJECTOR, width, hidden)  # drawn before the LoRA: the seed fixes both
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=LORA_TARGETS, init_lora_weights=False)
    return write_adapter(
        out_dir / "adapter",
        lora_model=get_peft_model(backbone, lora),
        projector=projector,
        projector_config=TINY_PROJECTOR,
        encoder=encoder_ref,
        audio_token_id=tokenizer.convert_tokens_to_ids("<|audio|>"),
    )


def small_backbone_config(text: dict, canvas_length: int, **config) -> DiffusionGemmaConfig:
    """A DiffusionGemmaConfig with the `text` sizes given, Gemma's special ids (pad 0, eos 1, bos 2)
    and a token-sized vision tower (the config class requires one; the loader drops it)."""
    return DiffusionGemmaConfig(
        text_config={**text, "max_position_embeddings": 1024, "pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2},
        vision_config=dict(
            model_type="gemma4_vision",
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            head_dim=8,
        ),
        canvas_length=canvas_length,
        **config,
    )


def tiny_backbone_config(canvas_length: int = 16, vocab_size: int = VOCAB_SIZE) -> DiffusionGemmaConfig:
    """Two layers (one sliding, one full attention), hidden 64, 4 experts top-2.

    Weights are drawn with std 0.3 instead of Gemma's 0.02: at 0.02 a random model's logits are flat,
    every canvas is just the sampler's noise, and nothing (audio included) visibly changes the output.
    """
    text = dict(
        initializer_range=TINY_INIT_STD,
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        global_head_dim=32,
        num_global_key_value_heads=1,
        num_experts=4,
        top_k_experts=2,
        moe_intermediate_size=32,
        sliding_window=256,
        layer_types=["sliding_attention", "full_attention"],
    )
    return small_backbone_config(text, canvas_length, initializer_range=TINY_INIT_STD)


def _backbone(tokenizer: PreTrainedTokenizerFast, canvas_length: int) -> DiffusionGemmaForBlockDiffusion:
    model = DiffusionGemmaForBlockDiffusion(tiny_backbone_config(canvas_length)).eval()
    model.generation_config.update(
        eos_token_id=[tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<turn|>")],
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    return model


def tiny_tokenizer(corpus: list[str] | None = None, vocab_size: int = VOCAB_SIZE) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on `corpus` (a few sentences by default): decodes any id back to text,
    like Gemma's tokenizer, and holds the special tokens the default prompt template spells."""
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus or _CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
        additional_special_tokens=SPECIAL_TOKENS[4:],
    )


def write_tiny_whisper(folder: Path, full: bool) -> int:
    """A tiny random Whisper (encoder-only, or full with a multilingual language-ID vocabulary)."""
    lang_tokens = {f"<|{code}|>": 10 + i for i, code in enumerate(LANGUAGES)}
    config = WhisperConfig(
        vocab_size=64,
        num_mel_bins=80,
        d_model=32,
        encoder_layers=1,
        encoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_layers=1,
        decoder_attention_heads=2,
        decoder_ffn_dim=64,
        max_source_positions=1500,
        max_target_positions=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=3,
        suppress_tokens=[],
        begin_suppress_tokens=[],
    )
    if full:
        model = WhisperForConditionalGeneration(config)
        model.generation_config.lang_to_id = lang_tokens
        model.generation_config.is_multilingual = True
        model.generation_config._from_model_config = False  # else loading rebuilds it from config.json
    else:
        model = WhisperEncoder(config)
    model.save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(folder)
    return config.d_model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a tiny random diffusion ASR checkpoint for tests.")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--canvas", type=int, default=16, help="canvas length (default 16)")
    parser.add_argument("--encoder", type=Path, help="use this Whisper folder instead of writing a tiny encoder")
    parser.add_argument("--full-whisper", action="store_true", help="write a full tiny Whisper (language ID works)")
    args = parser.parse_args(argv)
    adapter = write_tiny_checkpoint(
        args.out_dir, seed=args.seed, canvas_length=args.canvas, encoder=args.encoder, full_whisper=args.full_whisper
    )
    print(adapter)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
