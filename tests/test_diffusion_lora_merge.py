"""The decoder's LoRA merged into the tied base weights, the encoder's LoRA corrected: the same model.

The tiny checkpoint's LoRA targets the encoder and the decoder layers with matrices of their own
(random, so they matter). Merged as the loader does it, in float32, the prefill's KV cache and one
denoising forward's logits must equal the unmerged model's to float32 rounding, in every layout
the loader accepts; and the decoder must run no LoRA at all (that was the point: ~480 kernels a step).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from transformers import DiffusionGemmaForBlockDiffusion
from transformers.cache_utils import DynamicCache

from app.engine.diffusion.config import AdapterConfig
from app.engine.diffusion.denoising import Denoiser
from app.engine.diffusion.prefill import prefill
from app.engine.diffusion.loading import load_backbone
from app.engine.diffusion.lora import apply_lora
from tests.test_diffusion_engine import tiny_checkpoint
from tests.test_diffusion_loading import copy_adapter, decoder_only_lora


@pytest.fixture(scope="module")
def adapter(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory)


def unmerged(adapter: Path, lora_encoder: str) -> DiffusionGemmaForBlockDiffusion:
    config = AdapterConfig.from_dir(adapter)
    backbone = DiffusionGemmaForBlockDiffusion.from_pretrained(adapter / config.backbone, dtype=torch.float32)
    apply_lora(backbone, adapter / config.lora_dir, lora_encoder)
    return backbone.eval()


def merged(adapter: Path) -> DiffusionGemmaForBlockDiffusion:
    config = AdapterConfig.from_dir(adapter)
    return load_backbone(adapter / config.backbone, adapter / config.lora_dir, config, "fp32", torch.device("cpu"), torch.float32)


@torch.inference_mode()
def prefill_and_step(backbone: DiffusionGemmaForBlockDiffusion) -> tuple[torch.Tensor, torch.Tensor]:
    """The prefill's keys of every layer (stacked) and one denoising forward's logits, on fixed inputs."""
    generator = torch.Generator().manual_seed(0)
    text = backbone.config.get_text_config()
    prompt = Denoiser(backbone, use_graphs=False)._prompt(
        torch.randn(1, 12, text.hidden_size, generator=generator), torch.randint(0, text.vocab_size, (1, 5), generator=generator), 0
    )
    cache = prefill(backbone, prompt, DynamicCache(config=backbone.config.get_text_config(decoder=True)))
    keys = torch.cat([layer.keys.flatten() for layer in cache.layers] + [layer.values.flatten() for layer in cache.layers])
    canvas = torch.randint(0, text.vocab_size, (1, backbone.config.canvas_length), generator=generator)
    masks = backbone.model.decoder.create_diffusion_decoder_attention_mask(
        config=backbone.config, inputs_embeds=canvas.unsqueeze(-1), cache=cache, decoder_attention_mask=prompt.decoder_attention_mask
    )
    logits = backbone(decoder_input_ids=canvas, decoder_attention_mask=masks, cache=cache, decoder_position_ids=prompt.canvas_positions).logits
    return keys, logits


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def lora_modules(layers) -> list[BaseTunerLayer]:
    return [m for layer in layers for m in layer.modules() if isinstance(m, BaseTunerLayer)]


def test_merged_decoder_lora_gives_the_unmerged_models_cache_and_logits(adapter):
    reference = unmerged(adapter, "as_targeted")
    model = merged(adapter)
    keys, logits = prefill_and_step(model)
    ref_keys, ref_logits = prefill_and_step(reference)
    with _adapters_off(reference):
        _, bare_logits = prefill_and_step(reference)
    assert rel(keys, ref_keys) < 1e-5 and rel(logits, ref_logits) < 1e-5
    assert rel(bare_logits, ref_logits) > 1e-3  # the LoRA matters here: dropping it would not pass
    assert lora_modules(model.model.decoder.layers) == []  # the decoder runs plain linear layers
    for encoder, original in zip(lora_modules(model.model.encoder.language_model.layers), lora_modules(reference.model.encoder.language_model.layers)):
        (adapter_name,) = encoder.active_adapters
        assert encoder.r[adapter_name] == 2 * original.r[adapter_name]  # its own rank and the decoder's


def test_a_lora_shared_by_encoder_and_decoder_merges_whole(adapter, tmp_path):
    shared = decoder_only_lora(adapter, tmp_path / "adapter", lora_encoder="shared_with_decoder")
    reference, model = unmerged(shared, "shared_with_decoder"), merged(shared)
    (keys, logits), (ref_keys, ref_logits) = prefill_and_step(model), prefill_and_step(reference)
    assert rel(keys, ref_keys) < 1e-5 and rel(logits, ref_logits) < 1e-5
    assert lora_modules(model.model.decoder.layers) == [] == lora_modules(model.model.encoder.language_model.layers)


def test_a_decoder_lora_the_tied_encoder_lacks_stays_unmerged(adapter, tmp_path):
    """as_targeted with a LoRA on the decoder only: merging would hand the encoder the decoder's
    delta with no LoRA of its own to take it off, so nothing is merged."""
    decoder_only = decoder_only_lora(adapter, tmp_path / "adapter")
    reference, model = unmerged(decoder_only, "as_targeted"), merged(decoder_only)
    (keys, logits), (ref_keys, ref_logits) = prefill_and_step(model), prefill_and_step(reference)
    assert torch.equal(keys, ref_keys) and torch.equal(logits, ref_logits)
    assert len(lora_modules(model.model.decoder.layers)) == len(lora_modules(reference.model.decoder.layers)) > 0


class _adapters_off:
    """Every LoRA layer of `model` switched off for the block (peft's `disable_adapters` flag)."""

    def __init__(self, model) -> None:
        self.layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]

    def __enter__(self) -> None:
        for layer in self.layers:
            layer.enable_adapters(False)

    def __exit__(self, *exc) -> None:
        for layer in self.layers:
            layer.enable_adapters(True)


def test_merge_lora_false_keeps_the_decoder_lora(adapter, tmp_path):
    """`merge_lora: false` in asr_config.json: the LoRA stays on top of the weights (unquantized in
    the quantized modes), exactly the unmerged model."""
    kept = copy_adapter(adapter, tmp_path / "adapter", merge_lora=False)
    reference, model = unmerged(kept, "as_targeted"), merged(kept)
    (keys, logits), (ref_keys, ref_logits) = prefill_and_step(model), prefill_and_step(reference)
    assert torch.equal(keys, ref_keys) and torch.equal(logits, ref_logits)
    assert len(lora_modules(model.model.decoder.layers)) == len(lora_modules(reference.model.decoder.layers)) > 0
