"""Whisper on CTranslate2 through faster-whisper: the CPU engine (int8), ~1.5x transformers' speed.

The model is the same Whisper; only the runtime differs. The clip is cut into faster-whisper's own
features, the first 30 s window is encoded once (timed on its own, and reused for language
identification limited to the product's six languages), and faster-whisper's segment loop decodes
greedily from there, windows after the first included, so audio over 30 s is transcribed whole.

Progress granularity: CTranslate2's `Whisper.generate` hands back a window's tokens only when the
window is finished (it has no per-token callback), so `on_progress` is called once per segment that
faster-whisper yields: once for a dictation under 30 s (without timestamps the window is one
segment), and once per timestamped segment (a sentence or so) for longer audio. Cancellation
therefore takes effect between segments.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import TranscriptionOptions, get_suppressed_tokens

from app.engine.base import (
    AUTO,
    LANGUAGES,
    SAMPLE_RATE,
    Progress,
    ProgressCallback,
    Transcript,
    Word,
    check_audio,
    check_language,
    english_only,
    stage_timings,
    token_budget,
)
from app.engine.model_source import resolve_model
from app.engine.vocabulary_prompt import decode_budget, vocabulary_prompt
from app.engine.whisper_layout import ct2_folder
from app.errors import UserError, first_line

WINDOW_SAMPLES = 30 * SAMPLE_RATE
# The app's quantization names -> CTranslate2 compute types, per device. `auto` is int8 on the CPU
# (the speed of the figures in docs/benchmarks.md) and float16 on a GPU.
_COMPUTE_TYPES = {
    "cpu": {"auto": "int8", "int8": "int8", "fp32": "float32"},
    "cuda": {"auto": "float16", "int8": "int8_float16", "bf16": "bfloat16", "fp32": "float32"},
}
_APP_NAMES = {"int8": "int8", "int8_float16": "int8", "float16": "fp16", "bfloat16": "bf16", "float32": "fp32"}


class FasterWhisperEngine:
    """A loaded CTranslate2 Whisper model; `transcribe` follows the engine contract in `base.py`."""

    name = "faster-whisper"
    times_words = True  # faster-whisper's alignment of the text with the cross-attention (CTranslate2's `align`)

    def __init__(self, model: WhisperModel, device: str, compute_type: str) -> None:
        self.model = model
        self.device = device
        self.quantization = _APP_NAMES.get(compute_type, compute_type)
        self.multilingual = bool(model.model.is_multilingual)
        self.languages = tuple(LANGUAGES) if self.multilingual else ("en",)

    @classmethod
    def load(cls, spec) -> "FasterWhisperEngine":
        """Load `spec.model`: a CTranslate2 folder or Hub id as is, a transformers one converted once."""
        folder = ct2_folder(resolve_model(spec.model, what="Whisper model"), cache=_cache_dir())
        device, index = _device(spec.device)
        compute_type = _compute_type(spec.quantization, device)
        try:
            model = WhisperModel(str(folder), device=device, device_index=index, compute_type=compute_type,
                                 cpu_threads=_threads())
        except Exception as exc:  # ctranslate2 raises RuntimeError or ValueError, tokenizers a bare Exception
            raise UserError(
                f"The Whisper model in {folder} could not be loaded ({first_line(exc)}); it may be incomplete or "
                "corrupt: download it again or choose another model.",
                code="bad_model",
            ) from exc
        return cls(model, f"cuda:{index}" if device == "cuda" else "cpu", compute_type)

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
        `vocabulary` becomes the first window's prompt (app/engine/vocabulary_prompt.py); `words` times each word
        (an alignment pass over the text after decoding, in `decode`'s time)."""
        audio = check_audio(audio)
        language = check_language(language)
        if not self.multilingual:
            language = english_only(language)
        t0 = time.perf_counter()
        features = self.model.feature_extractor(audio)
        t_features = time.perf_counter()
        encoder_output = self.model.encode(self._first_window(features))
        t_encoder = time.perf_counter()

        detected = language == AUTO
        if detected:
            language = self._detect_language(encoder_output)
        long_form = audio.shape[0] > WINDOW_SAMPLES
        tokenizer = Tokenizer(self.model.hf_tokenizer, self.multilingual, task="transcribe", language=language)
        prompt = vocabulary_prompt(vocabulary, tokenizer.encode, language)
        budget = decode_budget(token_budget(min(audio.shape[0], WINDOW_SAMPLES)), prompt)
        options = _greedy_options(tokenizer, budget, timestamps=long_form, prompt=prompt, words=words and long_form)
        texts: list[str] = []
        timed: list[Word] = []
        text_tokens: list[int] = []
        for segment in self.model.generate_segments(features, tokenizer, options, False, encoder_output):
            texts.append(segment.text)
            timed += [Word(round(float(w.start), 3), round(float(w.end), 3), w.word) for w in segment.words or ()]
            text_tokens += segment.tokens
            if on_progress is not None:
                done = len(text_tokens)
                on_progress(Progress(step=done, total=max(budget, done), draft="".join(texts).strip()))
        if words and not long_form:
            timed = self._align(tokenizer, text_tokens, encoder_output, features.shape[-1] - 1, options)
        t_decode = time.perf_counter()

        return Transcript(
            text="".join(texts).strip(),
            language=language,
            steps_used=len(text_tokens),
            timings=stage_timings(t0, t_features, t_encoder, t_decode),
            language_detected=detected,
            words=tuple(timed) if words else None,
        )

    def detect_language(self, audio: np.ndarray) -> str:
        """Identify which of the product's languages is spoken in the first 30 s of `audio`."""
        audio = check_audio(audio)
        if not self.multilingual:
            return "en"
        features = self.model.feature_extractor(audio)
        return self._detect_language(self.model.encode(self._first_window(features)))

    def _first_window(self, features: np.ndarray) -> np.ndarray:
        """The first 30 s window, padded with the log-mel of silence rather than with zeros.

        Whisper was trained on audio padded with silence to 30 s. faster-whisper pads the features
        with 0, which after Whisper's normalisation is not silence but a faint hum: on the test data's
        espeak clips that costs language identification 2 of 8 Hindi and 2 of 8 Mandarin clips.
        Silence normalises to exactly the clip's largest value minus 2 (log10 floor at max - 8, then
        (x + 4) / 4), so the right padding is cheap. Windows after the first (audio over 30 s) are cut
        by faster-whisper's loop as it always does.
        """
        frames = min(self.model.feature_extractor.nb_max_frames, features.shape[-1] - 1)
        window = features[:, :frames]
        missing = self.model.feature_extractor.nb_max_frames - frames
        if missing <= 0:
            return window
        silence = np.full((window.shape[0], missing), window.max() - 2.0, dtype=window.dtype)
        return np.concatenate([window, silence], axis=1)

    def _align(self, tokenizer: Tokenizer, tokens: list[int], encoder_output: ctranslate2.StorageView, frames: int,
               options: TranscriptionOptions) -> list[Word]:
        """Each word's time in a recording of one window, from its decoded `tokens`: faster-whisper's own
        alignment (`add_word_timestamps`: CTranslate2's `align` over the alignment heads' cross-attention, then
        its punctuation merging and its limits on long words) run after the decoding.

        Not through its `word_timestamps` option: that also makes its segment loop start another window at
        the last word's end, which decoded the trailing silence of a 4 s clip into "Thank you." and took six
        times as long; here the text is exactly the one decoded without words."""
        if not tokens:
            return []
        segment = {"seek": 0, "start": 0.0, "end": frames / self.model.frames_per_second, "tokens": tokens}
        self.model.add_word_timestamps([[segment]], tokenizer, encoder_output,
                                       min(frames, self.model.feature_extractor.nb_max_frames),
                                       options.prepend_punctuations, options.append_punctuations,
                                       last_speech_timestamp=0.0)
        return [Word(round(float(w["start"]), 3), round(float(w["end"]), 3), w["word"]) for w in segment.get("words", ())]

    def _detect_language(self, encoder_output: ctranslate2.StorageView) -> str:
        """The most probable of the product's languages (Whisper knows 99; the others are never chosen)."""
        for token, _probability in self.model.model.detect_language(encoder_output)[0]:
            code = token.strip("<|>")
            if code in LANGUAGES:
                return code
        raise UserError("This Whisper model knows none of the app's languages; choose a multilingual Whisper model.",
                        code="bad_model")


def _greedy_options(tokenizer: Tokenizer, budget: int, *, timestamps: bool, prompt: list[int],
                    words: bool = False) -> TranscriptionOptions:
    """faster-whisper's own defaults for `transcribe(beam_size=1, temperature=0)`, plus the token budget.

    Windows after the first are not prompted with the text before them (as in the transformers engine's
    long-form decoding): a hallucination cannot spread from one window to the next, and the budget of
    440 new tokens always fits Whisper's 448 positions.

    `prompt` (the vocabulary's tokens, possibly none) is the first window's previous text; with
    `condition_on_previous_text` off, faster-whisper drops it after that window.

    Timestamps only for audio over 30 s, where they tell the segment loop where the next window starts;
    a dictation under 30 s is one window and decodes faster without them. `words`: faster-whisper's word
    timestamps (its `word_timestamps`), which also let the loop start the next window at the last word's end.
    """
    return TranscriptionOptions(
        beam_size=1,
        best_of=1,
        patience=1,
        length_penalty=1,
        repetition_penalty=1,
        no_repeat_ngram_size=0,
        log_prob_threshold=-1.0,
        no_speech_threshold=0.6,
        compression_ratio_threshold=2.4,
        condition_on_previous_text=False,
        prompt_reset_on_temperature=0.5,
        temperatures=[0.0],
        initial_prompt=prompt or None,
        prefix=None,
        suppress_blank=True,
        suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
        without_timestamps=not timestamps,
        max_initial_timestamp=1.0,
        word_timestamps=words,
        prepend_punctuations="\"'“¿([{-",
        append_punctuations="\"'.。,，!！?？:：”)]}、",
        multilingual=False,
        max_new_tokens=budget,
        clip_timestamps="0",
        hallucination_silence_threshold=None,
        hotwords=None,
    )


def _device(requested: str) -> tuple[str, int]:
    """`auto` means the first CUDA GPU CTranslate2 can use, else the CPU."""
    requested = (requested or "auto").strip().lower()
    gpus = ctranslate2.get_cuda_device_count()
    if requested == "auto":
        return ("cuda", 0) if gpus else ("cpu", 0)
    if requested == "cpu":
        return "cpu", 0
    kind, _, index = requested.partition(":")
    if kind != "cuda" or not (index or "0").isdigit():
        raise UserError(f"Unknown device '{requested}'. Use auto, cpu or cuda.", code="bad_device")
    if int(index or 0) >= gpus:
        raise UserError("A CUDA GPU was requested but CTranslate2 finds none; choose device auto or cpu.", code="no_gpu")
    return "cuda", int(index or 0)


def _compute_type(quantization: str, device: str) -> str:
    choices = _COMPUTE_TYPES[device]
    compute = choices.get(quantization)
    if compute is None or compute not in ctranslate2.get_supported_compute_types(device):
        usable = [q for q, c in choices.items() if c in ctranslate2.get_supported_compute_types(device)]
        raise UserError(
            f"The faster-whisper engine cannot run quantization '{quantization}' on the {device.upper()}; "
            f"use {', '.join(usable)}.",
            code="bad_quantization",
        )
    return compute


def _threads() -> int:
    """CTranslate2 follows torch's thread count, so one setting (OMP_NUM_THREADS, torch.set_num_threads)
    governs both Whisper engines and benchmarks compare them on equal threads."""
    import torch

    return torch.get_num_threads()


def _cache_dir() -> Path:
    """Where transformers checkpoints converted for CTranslate2 are kept (the per-OS cache folder)."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("diffusion-dictate", appauthor=False)) / "ctranslate2"


__all__ = ["FasterWhisperEngine"]
