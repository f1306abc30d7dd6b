"""The adapter's LoRA, through peft, with a strict check of its weight names.

peft's own loaders warn about unexpected keys and stay silent about missing ones; a LoRA that loads
half its weights would still "work" and transcribe badly. So the LoRA layers are injected in place
(the model stays a `DiffusionGemmaForBlockDiffusion`, its `generate()` usable as is), the keys peft
expects are compared with the file's, and only an exact match is loaded.

The LoRA is not merged into the base weights: encoder and decoder layers share (tie) those weights,
so merging one layer's LoRA would change the other's too.
"""

from __future__ import annotations

from pathlib import Path

from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict
from peft.tuners.tuners_utils import BaseTunerLayer
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


def _strip(key: str) -> str:
    return key[len(_SAVED_PREFIX) :] if key.startswith(_SAVED_PREFIX) else key
