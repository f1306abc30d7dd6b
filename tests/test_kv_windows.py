"""The decoder attention reading the prompt's cache and the canvas in place (app/engine/diffusion/kv_windows.py),
under Triton's interpreter in float32: the same logits bit for bit as transformers' concatenation."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import DiffusionGemmaForBlockDiffusion
from transformers.cache_utils import DynamicCache
from transformers.models.diffusion_gemma.modeling_diffusion_gemma import DiffusionGemmaDecoderTextAttention

from app.engine.diffusion import fused_attention, kv_windows
from app.engine.diffusion.denoising import Denoiser
from app.engine.diffusion.fused_norm import fuse_norms
from app.engine.diffusion.prefill import prefill
from tests.test_fused_layer import layered_model

pytest.importorskip("triton", reason="Triton is installed with the test extras")


@pytest.fixture(scope="module")
def backbone() -> DiffusionGemmaForBlockDiffusion:
    """Sliding and full attention, with a window shorter than the prompt (its cache keeps the last 7)."""
    model = layered_model(sliding_window=8)
    fuse_norms(model, torch.device("cpu"))  # what the windows' path is compared with: the GPU's path before it
    return model


def first_step(backbone: DiffusionGemmaForBlockDiffusion) -> tuple[torch.Tensor, DynamicCache]:
    generator = torch.Generator().manual_seed(1)
    prompt = Denoiser(backbone)._prompt(torch.randn(2, 11, 96, generator=generator), torch.randint(3, 500, (2, 3), generator=generator), -4)
    canvas = torch.randint(3, 500, (2, 16), generator=generator)
    with torch.inference_mode():
        cache = prefill(backbone, prompt, DynamicCache(config=backbone.config.get_text_config(decoder=True)))
        masks = backbone.model.decoder.create_diffusion_decoder_attention_mask(
            config=backbone.config, inputs_embeds=canvas.unsqueeze(-1), cache=cache, decoder_attention_mask=prompt.decoder_attention_mask)
        logits = backbone(decoder_input_ids=canvas, decoder_attention_mask=masks, cache=cache, decoder_position_ids=prompt.canvas_positions).logits
    return logits, cache


def test_the_windows_give_the_concatenations_logits(backbone, monkeypatch):
    fused = copy.deepcopy(backbone)
    assert fused_attention.fuse_attention(fused, torch.device("cpu")) == 4 and kv_windows.wanted(fused)
    appended = []
    append = DiffusionGemmaDecoderTextAttention.append_to_cache
    monkeypatch.setattr(DiffusionGemmaDecoderTextAttention, "append_to_cache",
                        lambda self, *args, **kwargs: appended.append(self.layer_idx) or append(self, *args, **kwargs))
    logits, cache = first_step(fused)
    assert appended == []  # no decoder layer concatenated its keys and values: each read its window
    expected, plain_cache = first_step(backbone)
    assert sorted(appended) == [0, 1]  # transformers' decoder did, in each layer
    assert torch.equal(logits, expected)
    for layer, plain in zip(cache.layers, plain_cache.layers, strict=True):
        keys, values, cached = layer.kv_window
        assert cached == plain.keys.shape[2] and torch.equal(keys[:, :, :cached], plain.keys) and torch.equal(values[:, :, :cached], plain.values)
    assert cache.layers[0].keys.shape[2] == 7  # the sliding layer's window holds what its cache keeps


def test_without_windows_the_fused_attention_concatenates(backbone):
    """A cache filled elsewhere (transformers' generate()) has no windows; one made for another canvas
    length is not used."""
    fused = copy.deepcopy(backbone)
    fused_attention.fuse_attention(fused, torch.device("cpu"))
    fused.model.decoder.reads_kv_windows = False
    logits, cache = first_step(fused)
    assert not any(hasattr(layer, "kv_window") for layer in cache.layers)
    assert torch.equal(logits, first_step(backbone)[0])
    kv_windows.open_windows(cache, 8)
    assert kv_windows.window(cache, 0, 16) is None and kv_windows.window(cache, 0, 8) is not None


def test_decoders_left_to_the_compiler_read_no_windows(backbone):
    fused = copy.deepcopy(backbone)
    fused_attention.fuse_attention(fused, torch.device("cpu"), leave=fused.model.decoder.layers)
    assert not kv_windows.wanted(fused)
