"""Write an adapter folder in the layout `loading.py` reads: peft's LoRA files, the projector's
weights and asr_config.json. The tiny test checkpoint and the micro model trained here both use it,
so what they write cannot drift from what the loader expects."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from peft import PeftModel
from safetensors.torch import save_file

from app.engine.diffusion.config import CONFIG_FILE, AdapterConfig, ProjectorConfig
from app.engine.diffusion.projector import AudioProjector


def write_adapter(
    adapter_dir: Path,
    *,
    lora_model: PeftModel,
    projector: AudioProjector,
    projector_config: ProjectorConfig,
    encoder: str,
    audio_token_id: int,
    **config: Any,
) -> Path:
    """Save into `adapter_dir` (created); the backbone is expected at ../backbone. `config` adds
    further asr_config.json fields (e.g. trim_audio), checked against the schema first."""
    values = {
        "backbone": "../backbone",
        "encoder": encoder,
        "audio_token_id": audio_token_id,
        **config,
        "projector": dataclasses.asdict(projector_config),
    }
    AdapterConfig.from_dict(json.loads(json.dumps(values)))  # a field the loader would refuse fails here
    adapter_dir.mkdir(parents=True, exist_ok=True)
    lora_model.save_pretrained(str(adapter_dir))
    (adapter_dir / "README.md").unlink(missing_ok=True)  # peft's model-card stub
    state = {k: v.detach().contiguous() for k, v in projector.state_dict().items()}
    save_file(state, str(adapter_dir / "projector.safetensors"))
    (adapter_dir / CONFIG_FILE).write_text(json.dumps(values, indent=2) + "\n", encoding="utf-8")
    return adapter_dir
