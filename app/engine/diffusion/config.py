"""The adapter's own config: every assumption about the unpublished parts of the real adapter.

The diffusion-gemma-asr-small adapter publishes its weights but not the details the inference code
needs (prompt template, audio token id, projector layers, file names). Each of those is a field
here with a documented default that is our best guess; an adapter folder overrides any of them in
`asr_config.json`. Unknown keys are rejected, so a typo fails loudly instead of silently falling
back to a guess. docs/diffusion.md explains where each default comes from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from app.engine.base import LANGUAGES
from app.errors import UserError

CONFIG_FILE = "asr_config.json"

# Gemma 4 chat format (`<|turn>` / `<turn|>`) with the audio wrapped in Gemma 4's begin/end-of-audio
# markers. The wording of the instruction is a guess: the adapter's training prompt is unpublished.
DEFAULT_PROMPT_TEMPLATE = (
    "<bos><|turn>user\nTranscribe this {language} audio.\n<|audio>{audio}<audio|><turn|>\n<|turn>model\n"
)
# Gemma 4's audio soft token (`<|audio|>`), as in public Gemma 4 configs (`audio_token_id`).
DEFAULT_AUDIO_TOKEN_ID = 258_881


@dataclass(frozen=True)
class ProjectorConfig:
    """Layers of the audio projector: strided 1-D convolutions (time subsampling), then linears.

    Defaults are a guess sized to the published ~19M parameters for whisper-small (768) -> 2816:
    three Conv1d(k=3, stride 2) with 1024 channels (x8 subsampling) then Linear 1024->2816, GELU,
    Linear 2816->2816. The final linear always outputs the backbone's hidden size.
    Weight names: `conv.{i}.weight|bias` and `proj.{j}.weight|bias`, after `key_prefix`.
    """

    conv_channels: tuple[int, ...] = (1024, 1024, 1024)
    conv_kernel: int = 3
    conv_stride: int = 2
    # Widths of the hidden linears; one more linear maps the last width to the backbone width.
    linear_hidden: tuple[int, ...] = (2816,)
    activation: str = "gelu"
    key_prefix: str = ""

    @property
    def subsampling(self) -> int:
        return self.conv_stride ** len(self.conv_channels)


@dataclass(frozen=True)
class AdapterConfig:
    """What `asr_config.json` may set; relative paths are resolved against the adapter folder."""

    # Frozen parts: local folders (relative to the adapter) or Hugging Face Hub ids.
    backbone: str = "google/diffusiongemma-26B-A4B-it"
    encoder: str = "openai/whisper-small"
    # Folder with the tokenizer; None: the adapter folder if it has one, else the backbone's.
    tokenizer: str | None = None
    # Prompt: `{language}` gets a language name, `{audio}` the audio slots. Text must follow `{audio}`
    # (it is the part `generate()` encodes itself).
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    audio_token_id: int = DEFAULT_AUDIO_TOKEN_ID
    # The speaker's vocabulary, for an adapter trained with one: `{context}` in prompt_template gets this
    # text with `{vocabulary}` replaced by the entries ("Kubernetes, Nguyen"), or nothing without a
    # vocabulary. None (the default: the published adapter's prompt has no such slot, and a model must
    # not be fed a prompt it was not trained with) ignores the vocabulary.
    context_template: str | None = None
    # Audio slots per 30 s window; None: the projector's output length (1500 frames / 8 = 188).
    audio_slots: int | None = None
    # True: the audio slots cover only the speech (the longest chunk's frames), not the whole 30 s
    # window, so the backbone reads no encoder frames of Whisper's padding. The prompt then starts
    # earlier by the slots it dropped (`PromptIds.first_position`), so every token keeps its distance
    # to the speech. A model must be trained the way it is run (the micro model is trained trimmed);
    # the published model's setting is not known, so False stays the default.
    trim_audio: bool = False
    language_names: dict[str, str] = field(default_factory=lambda: dict(LANGUAGES))
    # The languages the adapter was trained on (codes of LANGUAGES); None: all of them. Asked for another,
    # the engine says so instead of writing words of a language it never learnt (the micro model: "en").
    languages: tuple[str, ...] | None = None
    # Canvas length; None keeps the backbone config's `canvas_length` (256; the model card says 192).
    canvas_length: int | None = None
    # Longer audio is cut at pauses into chunks of at most this many seconds (30: Whisper's window).
    # A model that writes each token at the slot where it is spoken (the micro model's aligned
    # canvas) can only write as many slots as its canvas has positions, so it sets less.
    max_chunk_seconds: float = 30.0
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    projector_file: str = "projector.safetensors"
    # Folder (relative to the adapter) holding peft's adapter_config.json + adapter_model.safetensors.
    lora_dir: str = "."
    # "as_targeted": LoRA where peft's target_modules put it. "shared_with_decoder": the prefill
    # (encoder) pass reuses the decoder layers' LoRA modules, for adapters trained with one LoRA set
    # on the shared weights (DiffusionGemma's encoder and decoder are the same weights).
    lora_encoder: str = "as_targeted"
    # Merge the decoder's LoRA into the (tied) weights at load, the encoder's LoRA taking the
    # difference (lora.merge_decoder_lora): ~480 fewer kernels a denoising step at the real shape.
    # In quantized modes the merged weight is what gets quantized; false keeps the LoRA unquantized
    # on top, for an adapter found to need it.
    merge_lora: bool = True
    # Overrides for DiffusionGemmaGenerationConfig (entropy_bound, t_min, t_max, ...).
    generation: dict[str, Any] = field(default_factory=dict)
    default_steps: int = 8
    max_steps: int = 48

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = CONFIG_FILE) -> "AdapterConfig":
        _reject_unknown(data, cls, source)
        values = dict(data)
        if "projector" in values:
            projector = values["projector"] or {}
            _reject_unknown(projector, ProjectorConfig, f"{source} (projector)")
            for key in ("conv_channels", "linear_hidden"):
                if key in projector:
                    projector = {**projector, key: tuple(projector[key])}
            values["projector"] = ProjectorConfig(**projector)
        if "language_names" in values:
            values["language_names"] = {**LANGUAGES, **values["language_names"]}
        if values.get("languages") is not None:
            codes = values["languages"]
            if (not isinstance(codes, list) or not codes or any(not isinstance(c, str) or c not in LANGUAGES
                                                                 for c in codes)):
                raise UserError(f"{source}: languages must be a list of codes from {', '.join(LANGUAGES)}, or null; "
                                f"not {codes!r}.", code="bad_model")
            values["languages"] = tuple(codes)
        context = values.get("context_template")
        if context is not None and (not isinstance(context, str) or "{vocabulary}" not in context):
            raise UserError(f"{source}: context_template must be text containing {{vocabulary}}, or null.",
                            code="bad_model")
        if not isinstance(values.get("merge_lora", True), bool):
            raise UserError(f"{source}: merge_lora must be true or false, not {values['merge_lora']!r}.", code="bad_model")
        seconds = values.get("max_chunk_seconds", 30.0)
        if not isinstance(seconds, (int, float)) or not 1.0 <= seconds <= 30.0:
            raise UserError(f"{source}: max_chunk_seconds must be a number from 1 to 30, not {seconds!r}.", code="bad_model")
        return cls(**values)

    @classmethod
    def from_dir(cls, folder: Path) -> "AdapterConfig":
        """Read `asr_config.json` from an adapter folder; all defaults when the file is absent."""
        path = folder / CONFIG_FILE
        if not path.is_file():
            return cls()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"{path} is not valid JSON ({exc}); fix or delete it.", code="bad_model") from exc
        if not isinstance(data, dict):
            raise UserError(f"{path} must hold a JSON object.", code="bad_model")
        return cls.from_dict(data, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["projector"] = {f.name: getattr(self.projector, f.name) for f in fields(ProjectorConfig)}
        return json.loads(json.dumps(out))


def _reject_unknown(data: dict[str, Any], cls: type, source: str) -> None:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UserError(
            f"{source} has unknown keys: {', '.join(unknown)}. Known keys: {', '.join(sorted(known))}.",
            code="bad_model",
        )
