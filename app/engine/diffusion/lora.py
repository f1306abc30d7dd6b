"""The adapter's LoRA, through peft, with a strict check of its weight names.

peft's own loaders warn about unexpected keys and stay silent about missing ones; a LoRA that loads
half its weights would still "work" and transcribe badly. So the LoRA layers are injected in place
(the model stays a `DiffusionGemmaForBlockDiffusion`, its `generate()` usable as is), the keys peft
expects are compared with the file's, and only an exact match is loaded.

The decoder's LoRA is then merged into the base weights (`merge_decoder_lora`): the decoder runs
every denoising step, and an unmerged LoRA is 4 extra kernels on each of 4 projections in each of
its 30 layers (~480 of a step's ~3,000 kernels on an H100). Encoder and decoder layers share (tie)
those weights, so the encoder, which runs once per dictation, gets the difference as its LoRA:
its own minus the decoder's, one LoRA of the two ranks together.
"""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict
from peft.tuners.lora import Linear as LoraLinear
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn
from transformers import DiffusionGemmaForBlockDiffusion

from app.engine.diffusion.weights import check_weights, load_tensors, tensor_shapes
from app.errors import UserError

LORA_CONFIG = "adapter_config.json"
LORA_WEIGHTS = "adapter_model.safetensors"
# peft's save_pretrained writes keys relative to its PeftModel wrapper.
_SAVED_PREFIX = "base_model.model."


LORA_ENCODER_MODES = ("as_targeted", "shared_with_decoder")


def apply_lora(model: DiffusionGemmaForBlockDiffusion, folder: Path, encoder_mode: str = "as_targeted") -> None:
    """Inject the LoRA layers described in `folder` and load their weights, or list what does not match.

    With `encoder_mode="shared_with_decoder"` the encoder (prefill) layers then use the decoder
    layers' LoRA-wrapped projections: same base weights (tied) and the same LoRA matrices.
    """
    if encoder_mode not in LORA_ENCODER_MODES:
        raise UserError(f"lora_encoder must be one of {', '.join(LORA_ENCODER_MODES)}, not '{encoder_mode}'.", code="bad_model")
    config_path, weights_path = folder / LORA_CONFIG, folder / LORA_WEIGHTS
    if not config_path.is_file() or not weights_path.is_file():
        raise UserError(
            f"The adapter's LoRA is missing: {folder} must hold {LORA_CONFIG} and {LORA_WEIGHTS} (peft format). "
            "Set `lora_dir` in asr_config.json if they live elsewhere.",
            code="bad_model",
        )
    try:
        config = LoraConfig.from_pretrained(str(folder))
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(f"{config_path} is not a peft LoRA config ({exc}).", code="bad_model") from exc
    config.inference_mode = True
    inject_adapter_in_model(config, model)
    expected = {_strip(key): tuple(t.shape) for key, t in get_peft_model_state_dict(model).items()}
    found = {_strip(key): shape for key, shape in tensor_shapes(weights_path).items()}
    check_weights(
        "LoRA",
        weights_path,
        expected,
        found,
        hint=f"The LoRA targets in {LORA_CONFIG} (target_modules) must name the backbone's layers; check that "
        "--backbone is the model the adapter was trained on.",
    )
    tensors = load_tensors(weights_path)
    result = set_peft_model_state_dict(model, {_strip(k): v for k, v in tensors.items()})
    if result.unexpected_keys:
        raise UserError(f"peft did not place these LoRA tensors: {', '.join(result.unexpected_keys[:12])}.", code="bad_model")
    if encoder_mode == "shared_with_decoder":
        _share_decoder_lora(model)


def _share_decoder_lora(model: DiffusionGemmaForBlockDiffusion) -> None:
    for decoder_layer, encoder_layer in zip(model.model.decoder.layers, model.model.encoder.language_model.layers):
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            wrapped = getattr(decoder_layer.self_attn, name)
            if isinstance(wrapped, BaseTunerLayer):
                if isinstance(getattr(encoder_layer.self_attn, name), BaseTunerLayer):
                    raise UserError(
                        "lora_encoder is shared_with_decoder, but the LoRA also targets the encoder layers; "
                        "use lora_encoder: as_targeted for this adapter.",
                        code="bad_model",
                    )
                setattr(encoder_layer.self_attn, name, wrapped)


def merge_decoder_lora(model: DiffusionGemmaForBlockDiffusion) -> int:
    """Merge each decoder projection's LoRA into its base weight; returns how many were merged.

    Where the encoder layer shares the base weight (tied), its LoRA becomes (own - decoder's), so
    it computes what it did before: W' = W + dW_dec, and the encoder adds dW_enc - dW_dec. Where it
    shares the decoder's LoRA module (`lora_encoder: shared_with_decoder`), the merge is all it
    needs. A projection whose LoRA is of another kind (DoRA and peft's other variants, several
    active adapters) or whose tied encoder side has no LoRA to correct with is left unmerged.
    """
    merged = 0
    for decoder_layer, encoder_layer in zip(model.model.decoder.layers, model.model.encoder.language_model.layers):
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            decoder, encoder = getattr(decoder_layer.self_attn, name, None), getattr(encoder_layer.self_attn, name, None)
            if not _plain_lora(decoder):
                continue
            base = decoder.base_layer
            tied = encoder is not decoder and _weight(encoder) is base.weight
            if tied and not _plain_lora(encoder):
                continue  # the encoder would see the decoder's delta with nothing to take it off
            (adapter,) = decoder.active_adapters
            with torch.no_grad():
                delta = decoder.lora_B[adapter].weight.float() @ decoder.lora_A[adapter].weight.float() * decoder.scaling[adapter]
                base.weight.copy_(base.weight.float() + delta)  # rounded once, to the weight's dtype
                if tied:
                    _subtract_lora(encoder, decoder)
            setattr(decoder_layer.self_attn, name, base)
            if encoder is decoder:
                setattr(encoder_layer.self_attn, name, base)
            merged += 1
    return merged


def _plain_lora(module: nn.Module | None) -> bool:
    """A peft LoRA linear with one active adapter of the vanilla kind (B(A(x)) * scaling)."""
    if not isinstance(module, LoraLinear) or module.merged or len(module.active_adapters) != 1:
        return False
    (adapter,) = module.active_adapters
    return adapter in module.lora_A and adapter not in module.lora_variant and module.lora_B[adapter].bias is None


def _weight(module: nn.Module | None) -> torch.Tensor | None:
    return module.base_layer.weight if isinstance(module, BaseTunerLayer) else getattr(module, "weight", None)


def _subtract_lora(encoder: LoraLinear, decoder: LoraLinear) -> None:
    """Make `encoder`'s LoRA compute its own delta minus `decoder`'s: A stacked, B side by side with
    the scalings folded in (the decoder's negated), scaling 1."""
    (adapter,) = encoder.active_adapters
    (other,) = decoder.active_adapters
    a_enc, b_enc = encoder.lora_A[adapter].weight, encoder.lora_B[adapter].weight
    a_dec, b_dec = decoder.lora_A[other].weight, decoder.lora_B[other].weight
    stacked_a = torch.cat([a_enc, a_dec.to(a_enc)])
    stacked_b = torch.cat([b_enc.float() * encoder.scaling[adapter], -b_dec.float() * decoder.scaling[other]], dim=1).to(b_enc)
    lora_a = nn.Linear(stacked_a.shape[1], stacked_a.shape[0], bias=False, device=a_enc.device, dtype=a_enc.dtype)
    lora_b = nn.Linear(stacked_b.shape[1], stacked_b.shape[0], bias=False, device=b_enc.device, dtype=b_enc.dtype)
    lora_a.weight.requires_grad_(False).copy_(stacked_a)
    lora_b.weight.requires_grad_(False).copy_(stacked_b)
    encoder.lora_A[adapter], encoder.lora_B[adapter] = lora_a, lora_b
    encoder.scaling[adapter] = 1.0
    encoder.r[adapter] = stacked_a.shape[0]


def _strip(key: str) -> str:
    return key[len(_SAVED_PREFIX) :] if key.startswith(_SAVED_PREFIX) else key
