"""Autoregressive Whisper through transformers: the CPU fallback and the baseline for benchmarks.

The encoder runs once per clip (timed on its own), language identification reuses its output, and
`generate()` decodes token by token. A streamer turns every generated token into a `Progress` with
the text so far, so the live preview and cancellation work as they do for the diffusion engine.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
import numpy as np
import torch
from safetensors import SafetensorError
from transformers import WhisperForConditionalGeneration, WhisperProcessor
from transformers.generation.streamers import BaseStreamer
from transformers.modeling_outputs import BaseModelOutput

from app.engine.base import (
    AUTO,
    LANGUAGES,
    SAMPLE_RATE,
    Progress,
    ProgressCallback,
    Transcript,
    check_audio,
    check_language,
    english_only,
    stage_timings,
    token_budget,
)
from app.engine.devices import out_of_memory_as_user_error, pick_device
from app.engine.model_source import resolve_model
from app.engine.vocabulary_prompt import decode_budget, vocabulary_prompt
from app.errors import UserError, first_line

WINDOW_SAMPLES = 30 * SAMPLE_RATE
_REQUIRED_FILES = ("config.json", "preprocessor_config.json")


class _StepStreamer(BaseStreamer):
    """Counts decoder passes and, given a callback, reports each with the decoded text so far.

    The first `put` is the prompt, not a decoding step. The end token counts as a step (it took a pass)
    although `generate` strips it from its output.
    """

    def __init__(self, processor: WhisperProcessor, on_progress: ProgressCallback | None, total: int) -> None:
        self._processor = processor
        self._total = total
        self._on_progress = on_progress
        self._tokens: list[int] = []
        self._seen_prompt = False

    @property
    def steps(self) -> int:
        return len(self._tokens)

    def put(self, value: torch.Tensor) -> None:
        if not self._seen_prompt:
            self._seen_prompt = True
            return
        self._tokens.extend(int(t) for t in value.reshape(-1).tolist())
        if self._on_progress is not None:
            draft = self._processor.tokenizer.decode(self._tokens, skip_special_tokens=True).strip()
            self._on_progress(Progress(step=len(self._tokens), total=self._total, draft=draft))

    def end(self) -> None:
        pass


class WhisperEngine:
    """A loaded Whisper model; `transcribe` follows the engine contract in `base.py`."""

    name = "whisper"
    # Not yet: transformers' `return_token_timestamps` gives one time a token, not the words' spans that
    # faster-whisper's alignment gives (app/engine/whisper_ct2.py), and nothing here groups them yet.
    times_words = False

    def __init__(self, model: WhisperForConditionalGeneration, processor: WhisperProcessor, device: torch.device) -> None:
        self.model = model
        self.processor = processor
        self.device = device
        self.dtype = next(model.parameters()).dtype
        self.multilingual = bool(getattr(model.generation_config, "is_multilingual", False))
        self.languages = tuple(LANGUAGES) if self.multilingual else ("en",)
        lang_to_id = getattr(model.generation_config, "lang_to_id", None) or {}
        # Language identification is limited to the languages the product supports.
        self._supported_lang_ids = {f"<|{code}|>": lang_to_id[f"<|{code}|>"] for code in LANGUAGES if f"<|{code}|>" in lang_to_id}

    @classmethod
    def load(cls, spec) -> "WhisperEngine":
        """Load from a local folder or a Hub id (`spec.model`); fp16 on a GPU, fp32 on the CPU."""
        folder = resolve_model(spec.model, what="Whisper model")
        missing = [name for name in _REQUIRED_FILES if not (folder / name).is_file()]
        if missing:
            raise UserError(
                f"The folder {folder} is not a Whisper model in transformers format (missing {', '.join(missing)}); "
                "choose another folder or a Hub id such as openai/whisper-base.",
                code="bad_model",
            )
        device = pick_device(spec.device)
        dtype = _dtype_for(spec.quantization, device)
        try:
            processor = WhisperProcessor.from_pretrained(folder)
            model = WhisperForConditionalGeneration.from_pretrained(folder, dtype=dtype)
        except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as exc:
            raise UserError(
                f"The Whisper model in {folder} could not be loaded ({first_line(exc)}); it may be incomplete or "
                "corrupt: download it again or choose another model.",
                code="bad_model",
            ) from exc
        with out_of_memory_as_user_error("loading the Whisper model"):
            model = model.to(device).eval()
        return cls(model, processor, device)

    def preparations(self) -> list:
        """Nothing to prepare: Whisper runs its kernels as they are (see `Engine.preparations`)."""
        return []

    def transcribe(
        self,
        audio: np.ndarray,
        *,
        language: str = AUTO,
        steps: int | None = None,
        on_progress: ProgressCallback | None = None,
        vocabulary: Sequence[str] = (),
        words: bool = False,
    ) -> Transcript:
        """Transcribe 16 kHz mono audio. `steps` has no meaning for autoregressive decoding and is ignored;
        `vocabulary` becomes the first window's prompt (app/engine/vocabulary_prompt.py); `words` is ignored
        (`times_words`)."""
        audio = check_audio(audio)
        language = self._check_model_language(check_language(language))
        with out_of_memory_as_user_error("transcribing"), torch.inference_mode():
            return self._transcribe(audio, language, on_progress, vocabulary)

    def _transcribe(self, audio: np.ndarray, language: str, on_progress: ProgressCallback | None,
                    vocabulary: Sequence[str]) -> Transcript:
        t0 = time.perf_counter()
        long_form = audio.shape[0] > WINDOW_SAMPLES
        inputs = self.processor.feature_extractor(
            audio,
            sampling_rate=SAMPLE_RATE,
            return_tensors="pt",
            return_attention_mask=long_form,
            **({"truncation": False, "padding": "longest"} if long_form else {}),
        )
        features = inputs.input_features.to(self.device, self.dtype)
        t_features = time.perf_counter()

        encoder_outputs = BaseModelOutput(last_hidden_state=self.model.get_encoder()(features[:, :, :3000]).last_hidden_state)
        t_encoder = time.perf_counter()

        detected = False
        if language == AUTO:
            language, detected = self._detect_language(encoder_outputs), True

        encode = lambda text: self.processor.tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
        prompt = vocabulary_prompt(vocabulary, encode, language)
        budget = decode_budget(token_budget(audio.shape[0]), prompt)
        streamer = _StepStreamer(self.processor, on_progress, budget)
        kwargs: dict = {"task": "transcribe", "streamer": streamer} if self.multilingual else {"streamer": streamer}
        if self.multilingual:
            kwargs["language"] = language
        if prompt:  # <|startofprev|> and the vocabulary; decode() strips them from the text
            start = self.processor.tokenizer.convert_tokens_to_ids("<|startofprev|>")
            kwargs["prompt_ids"] = torch.tensor([start, *prompt], device=self.device)
        if long_form:
            kwargs["attention_mask"] = inputs.attention_mask.to(self.device)
            kwargs["return_timestamps"] = True
            kwargs.pop("streamer")  # sequential long-form decoding does not stream
            tokens = self.model.generate(features, **kwargs)
        else:
            tokens = self.model.generate(encoder_outputs=encoder_outputs, max_new_tokens=budget, **kwargs)
        t_decode = time.perf_counter()

        ids = tokens[0] if not isinstance(tokens, dict) else tokens["sequences"][0]
        text = self.processor.tokenizer.decode(ids, skip_special_tokens=True).strip()
        # Sequential long-form decoding cannot stream: count its output tokens instead of passes.
        steps_used = streamer.steps if not long_form else ids.numel() - _prompt_length(ids, self.processor)
        return Transcript(
            text=text,
            language=language,
            steps_used=steps_used,
            timings=stage_timings(t0, t_features, t_encoder, t_decode),
            language_detected=detected,
        )

    def detect_language(self, audio: np.ndarray) -> str:
        """Identify which of the product's languages is spoken in the first 30 s of `audio`."""
        audio = check_audio(audio)
        if not self.multilingual:
            return "en"
        with out_of_memory_as_user_error("identifying the language"), torch.inference_mode():
            features = self.processor.feature_extractor(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
            hidden = self.model.get_encoder()(features.to(self.device, self.dtype)).last_hidden_state
            return self._detect_language(BaseModelOutput(last_hidden_state=hidden))

    def _check_model_language(self, language: str) -> str:
        return language if self.multilingual else english_only(language)

    def _detect_language(self, encoder_outputs: BaseModelOutput) -> str:
        config = copy.copy(self.model.generation_config)
        config.lang_to_id = self._supported_lang_ids
        token_id = int(self.model.detect_language(encoder_outputs=encoder_outputs, generation_config=config)[0])
        by_id = {v: k for k, v in self._supported_lang_ids.items()}
        return by_id[token_id].strip("<|>")


def _prompt_length(ids: torch.Tensor, processor: WhisperProcessor) -> int:
    """Count the leading special tokens (start, language, task, no-timestamps) that generate returns."""
    special = set(processor.tokenizer.all_special_ids)
    count = 0
    for token in ids.tolist():
        if token not in special:
            break
        count += 1
    return count


def _dtype_for(quantization: str, device: torch.device) -> torch.dtype:
    if quantization in ("auto", "bf16", "fp16"):
        if device.type == "cuda":
            return torch.float16 if quantization != "bf16" else torch.bfloat16
        return torch.float32
    if quantization == "fp32":
        return torch.float32
    raise UserError(
        f"The Whisper engine does not support quantization '{quantization}'; use auto, bf16 or fp32.",
        code="bad_quantization",
    )


__all__ = ["WhisperEngine"]
