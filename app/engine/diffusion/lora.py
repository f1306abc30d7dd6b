"""The adapter's LoRA, through peft, with a strict check of its weight names.

peft's own loaders warn about unexpected keys and stay silent about missing ones; a LoRA that loads
half its weights would still "work" and transcribe badly. So the LoRA layers are injected in place
(the model stays a `DiffusionGemmaForBlockDiffusion`, its `generate()` usable as is), the keys peft
expects are compared with the file's, and only an exact match is loaded.

The LoRA is not merged into the base weights: encoder and decoder layers share (tie) those weights
but carry separate LoRA matrices, so merging either would change the other.
"""

from __future__ import annotations

from pathlib import Path

from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict
from transformers import DiffusionGemmaForBlockDiffusion

from app.engine.diffusion.weights import check_weights, load_tensors, tensor_shapes
from app.errors import UserError

LORA_CONFIG = "adapter_config.json"
LORA_WEIGHTS = "adapter_model.safetensors"
# peft's save_pretrained writes keys relative to its PeftModel wrapper.
_SAVED_PREFIX = "base_model.model."


def apply_lora(model: DiffusionGemmaForBlockDiffusion, folder: Path) -> None:
    """Inject the LoRA layers described in `folder` and load their weights, or list what does not match."""
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


def _strip(key: str) -> str:
    return key[len(_SAVED_PREFIX) :] if key.startswith(_SAVED_PREFIX) else key
