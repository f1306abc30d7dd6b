"""DiffusionEngine: diffusion-gemma-asr-small behind the common engine interface.

One call runs, in order: split long audio at pauses -> Whisper features -> Whisper encoder ->
projector -> (language identification for `auto`) -> prompt embeddings with the audio in its slots ->
KV-cache prefill -> DiffusionGemma's denoising of one canvas per chunk, all chunks in one batch ->
text up to the first end-of-turn token, chunks joined.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch

from app.engine.base import AUTO, SAMPLE_RATE, Progress, ProgressCallback, Transcript, check_audio, check_language
from app.engine.devices import out_of_memory_as_user_error
from app.engine.diffusion.chunking import join_texts, split_at_pauses
from app.engine.diffusion.denoising import Denoiser
from app.engine.diffusion.fused_norm import fuse_norms
from app.engine.diffusion.loading import DiffusionModel, load_model
from app.engine.diffusion.prompt import embed_prefix
from app.errors import UserError


class DiffusionEngine:
    """A loaded diffusion ASR model; `transcribe` follows the engine contract in `app/engine/base.py`."""

    name = "diffusion"

    def __init__(self, model: DiffusionModel, *, seed: int = 0) -> None:
        self.model = model
        self.seed = seed
        if model.device.type == "cuda":
            fuse_norms(model.backbone, model.device)
        self.denoiser = Denoiser(model.backbone)
        eos = model.backbone.generation_config.eos_token_id
        self._eos_ids = set([eos] if isinstance(eos, int) else (eos or []))

    @classmethod
    def load(cls, spec) -> "DiffusionEngine":
        """Load the adapter `spec.model` with its backbone and encoder (see `loading.py`), warmed up."""
        engine = cls(load_model(spec), seed=spec.seed)
        engine.warm_up()
        return engine

    def warm_up(self) -> None:
        """A 1-step transcription of quiet noise per prompt length the languages give: the first real
        dictation should not pay the one-time costs (lazy imports, kernel selection, and on a GPU the
        capture of the prefill and step graphs for a single-chunk dictation in each language)."""
        quiet = np.random.default_rng(0).standard_normal(SAMPLE_RATE // 2).astype(np.float32) * 0.01
        names = self.model.config.language_names
        lengths = {code: len(ids.prefix) + len(ids.tail) for code in names for ids in [self.model.prompt.build(names[code])]}
        by_length = {length: code for code, length in reversed(list(lengths.items()))}
        for language in by_length.values():
            self.transcribe(quiet, language=language, steps=1, early_exit=False)

    @property
    def quantization(self) -> str:
        return self.model.quantization

    def transcribe(
        self,
        audio: np.ndarray,
        *,
        language: str = AUTO,
        steps: int | None = None,
        on_progress: ProgressCallback | None = None,
        vocabulary: Sequence[str] = (),
        early_exit: bool = True,
        seed: int | None = None,
    ) -> Transcript:
        """Transcribe 16 kHz mono audio with at most `steps` denoising steps (default from the adapter, 8).

        `early_exit=False` runs exactly `steps` steps (benchmarks, tests). `seed` overrides the engine's
        seed for this call; the same audio, steps and seed give the same text. An exception raised by
        `on_progress` (called after every step) aborts the transcription: that is how to cancel.
        `vocabulary` goes into the prompt's context slot where the adapter has one (config.py), else unused.
        """
        audio = check_audio(audio)
        language = check_language(language)
        steps = self._check_steps(steps)
        with out_of_memory_as_user_error("transcribing"), torch.inference_mode():
            return self._transcribe(audio, language, steps, on_progress, early_exit, self.seed if seed is None else seed,
                                    vocabulary)

    def _transcribe(
        self,
        audio: np.ndarray,
        language: str,
        steps: int,
        on_progress: ProgressCallback | None,
        early_exit: bool,
        seed: int,
        vocabulary: Sequence[str] = (),
    ) -> Transcript:
        m = self.model
        timings: dict[str, float | list[float]] = {}
        clock = _Clock(m.device)
        longest = m.config.max_chunk_seconds
        chunks = split_at_pauses(audio, max_seconds=longest, min_seconds=longest / 2)
        if not chunks:  # digital silence: nothing to say, and nothing for the model to invent
            return Transcript(text="", language=language, steps_used=0, timings={"total": clock.lap_ms()})

        features = m.audio.features(chunks)
        timings["features"] = clock.lap_ms()
        frames = m.audio.encode(features)
        speech = frames
        if m.config.trim_audio:  # one batch: every chunk keeps the longest chunk's frames
            speech = frames[:, : max(m.audio.frames_for(len(chunk)) for chunk in chunks)]
        audio_embeds = m.projector(speech)
        timings["encoder"] = clock.lap_ms()
        detected = language == AUTO
        if detected:
            language = m.audio.detect_language(frames)
            timings["language_id"] = clock.lap_ms()

        ids = m.prompt.build(m.config.language_names[language], audio_slots=audio_embeds.shape[1], vocabulary=vocabulary)
        batch = len(chunks)
        prefix = torch.tensor([ids.prefix] * batch, device=m.device)
        tail = torch.tensor([ids.tail] * batch, device=m.device)
        embeds = embed_prefix(m.backbone.get_input_embeddings(), prefix, audio_embeds, m.config.audio_token_id)

        def on_draft(step: int, canvases: torch.Tensor) -> None:
            on_progress(Progress(step=step, total=steps, draft=self._text(canvases, language)))

        result = self.denoiser(
            embeds,
            tail,
            steps=steps,
            seed=seed,
            first_position=ids.first_position,
            early_exit=early_exit,
            on_draft=on_draft if on_progress is not None else None,
        )
        clock.lap_ms()  # the denoising itself, reported below split into prefill and steps
        timings["prefill"] = round(result.prefill_ms, 2)
        timings["steps"] = [round(ms, 2) for ms in result.step_ms]
        text = self._text(result.canvases, language)
        timings["decode"] = clock.lap_ms()
        timings["total"] = clock.total_ms()
        return Transcript(text=text, language=language, steps_used=result.steps_used, timings=timings, language_detected=detected)

    def _text(self, canvases: torch.Tensor, language: str) -> str:
        """Each canvas up to its first end-of-turn/EOS token, detokenised; chunks joined."""
        texts = []
        for row in canvases.tolist():
            end = next((i for i, token in enumerate(row) if token in self._eos_ids), len(row))
            texts.append(self.model.tokenizer.decode(row[:end], skip_special_tokens=True))
        return join_texts(texts, language)

    def _check_steps(self, steps: int | None) -> int:
        config = self.model.config
        if steps is None:
            return config.default_steps
        if not isinstance(steps, int) or not 1 <= steps <= config.max_steps:
            raise UserError(f"Steps must be a whole number from 1 to {config.max_steps}, not {steps}.", code="bad_steps")
        return steps


class _Clock:
    """Millisecond laps that wait for queued GPU work, so each phase is billed its own time."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.start = self.last = time.perf_counter()

    def lap_ms(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        lap, self.last = now - self.last, now
        return round(lap * 1000.0, 2)

    def total_ms(self) -> float:
        return round((self.last - self.start) * 1000.0, 2)
