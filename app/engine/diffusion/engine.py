"""DiffusionEngine: diffusion-gemma-asr-small behind the common engine interface.

One call runs, in order: split long audio at pauses -> Whisper features -> Whisper encoder ->
projector -> (language identification for `auto`) -> prompt embeddings with the audio in its slots ->
KV-cache prefill -> DiffusionGemma's denoising of one canvas per chunk, all chunks in one batch ->
text up to the first end-of-turn token, chunks joined. `transcribe_batch` runs the same for several
recordings at once (a speech server's waiting requests): one encoder batch, one denoising pass per
distinct prompt.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence

import numpy as np
import torch

from app.engine.base import (AUTO, LANGUAGES, SAMPLE_RATE, BatchItem, Preparation, Progress, ProgressCallback, Transcript,
                             check_audio, check_language, join_texts)
from app.engine.devices import out_of_memory_as_user_error
from app.engine.diffusion.chunking import split_at_pauses
from app.engine.diffusion.denoising import Denoiser
from app.engine.diffusion.expert_routing import install_routing
from app.engine.diffusion.fused_attention import fuse_attention
from app.engine.diffusion.fused_layer import fuse_layers
from app.engine.diffusion.fused_mlp import fuse_mlps
from app.engine.diffusion.fused_norm import fuse_norms
from app.engine.diffusion.loading import DiffusionModel, load_model
from app.engine.diffusion.prompt import embed_prefix
from app.errors import UserError


class DiffusionEngine:
    """A loaded diffusion ASR model; `transcribe` follows the engine contract in `app/engine/base.py`."""

    name = "diffusion"
    times_words = False  # the canvas is written all at once, from the whole recording: no word has a time

    def __init__(self, model: DiffusionModel, *, seed: int = 0, compile_layers: bool = False) -> None:
        self.model = model
        self.seed = seed
        install_routing(model.backbone)
        if model.device.type == "cuda":
            compiled = model.backbone.model.decoder.layers if compile_layers else None  # Inductor fuses those itself
            fuse_norms(model.backbone, model.device, leave=compiled)
            fuse_layers(model.backbone, model.device, leave=compiled)
            fuse_attention(model.backbone, model.device, leave=compiled)
            fuse_mlps(model.backbone, model.device)  # compiled layers too: one product of gate and up is theirs as well
        self.denoiser = Denoiser(model.backbone, compile_layers=compile_layers)
        trained = model.config.languages or tuple(LANGUAGES)
        heard = ("en",) if model.audio.english_only else tuple(LANGUAGES)
        self.languages = tuple(code for code in trained if code in heard) or trained  # what it can transcribe
        eos = model.backbone.generation_config.eos_token_id
        self._eos_ids = set([eos] if isinstance(eos, int) else (eos or []))

    @classmethod
    def load(cls, spec) -> "DiffusionEngine":
        """Load the adapter `spec.model` with its backbone and encoder (see `loading.py`), warmed up."""
        engine = cls(load_model(spec), seed=spec.seed, compile_layers=spec.compile)
        engine.warm_up()
        return engine

    def warm_up(self) -> None:
        """A 1-step transcription of quiet noise per prompt length the languages give: the first real
        dictation should not pay the one-time costs (lazy imports, kernel selection). It runs eagerly
        and so queues the fast path of a single-chunk dictation in each language (`preparations`).
        On a GPU the Whisper encoder's graph for one window is captured here (`WhisperAudioEncoder.capture`)."""
        quiet = np.random.default_rng(0).standard_normal(SAMPLE_RATE // 2).astype(np.float32) * 0.01
        names = self.model.config.language_names
        lengths = {code: len(ids.prefix) + len(ids.tail) for code in self.languages
                   for ids in [self.model.prompt.build(names[code])]}
        by_length = {length: code for code, length in reversed(list(lengths.items()))}
        for language in by_length.values():
            self.transcribe(quiet, language=language, steps=1, early_exit=False)
        if self.denoiser.use_graphs:
            with torch.inference_mode():
                self.model.audio.capture(batch=1)

    def preparations(self) -> list[Preparation]:
        """The next stage of each prompt shape seen and not prepared yet (`Denoiser.prepare`): capture
        its CUDA graphs (between dictations), and with compiled layers compile them (beside
        dictations) and capture the graphs again. Seconds to minutes each; until the first, that
        shape runs eagerly."""
        what = {"compile": "compiled layers", "capture": "GPU graphs", "recapture": "GPU graphs with compiled layers"}
        return [Preparation(f"{what[stage]} for {label}", functools.partial(self._prepare, key), alongside_jobs=stage == "compile")
                for key, label, stage in self.denoiser.pending()]

    def _prepare(self, key: tuple[int, int, int]) -> None:
        with torch.inference_mode():
            self.denoiser.prepare(key)

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
        words: bool = False,
        early_exit: bool = True,
        seed: int | None = None,
    ) -> Transcript:
        """Transcribe 16 kHz mono audio with at most `steps` denoising steps (default from the adapter, 8).

        `early_exit=False` runs exactly `steps` steps (benchmarks, tests). `seed` overrides the engine's
        seed for this call; the same audio, steps and seed give the same text (but for a compile running
        beside it: `Preparation`). An exception raised by
        `on_progress` (called after every step) aborts the transcription: that is how to cancel.
        `vocabulary` goes into the prompt's context slot where the adapter has one (config.py), else unused.
        `words` is ignored (`times_words`).
        """
        item = BatchItem(audio, language, tuple(vocabulary), on_progress)
        outcome = self._run([item], steps, early_exit, seed)[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def transcribe_batch(
        self,
        items: Sequence[BatchItem],
        *,
        steps: int | None = None,
        early_exit: bool = True,
        seed: int | None = None,
    ) -> list[Transcript | None]:
        """Transcribe several recordings at once (a speech server's waiting requests), in order.

        A denoising step reads every weight of the backbone whatever the batch, so on a GPU the canvases
        of several requests cost little more than one. The chunks of all items go through the encoder
        together; items whose prompts are the same (same language and vocabulary, and with `trim_audio`
        the same speech length) share one denoising pass. Each item gets its own text, language and timings (`timings["batch"]`: how many requests
        shared its pass). None for an item whose `on_progress` raised (it was cancelled); the others go on.

        A request's text in a batch is a draw of the same sampler as alone, not the same draw: the
        sampler's random numbers are drawn for the whole batch at once (transformers' denoising step),
        so which neighbours a request had changes the noise it saw, never the model it saw. The same
        batch, steps and seed give the same texts.
        """
        return [None if isinstance(o, Exception) else o for o in self._run(list(items), steps, early_exit, seed)]

    def _run(self, items: list[BatchItem], steps: int | None, early_exit: bool,
             seed: int | None) -> list[Transcript | Exception]:
        items = [BatchItem(check_audio(i.audio), self._model_language(check_language(i.language)), i.vocabulary,
                           i.on_progress) for i in items]
        steps = self._check_steps(steps)
        with out_of_memory_as_user_error("transcribing"), torch.inference_mode():
            return self._transcribe(items, steps, early_exit, self.seed if seed is None else seed)

    def _model_language(self, language: str) -> str:
        """`language` where the model knows it; `auto` is the model's language where it knows only one."""
        if language == AUTO:
            return self.languages[0] if len(self.languages) == 1 else AUTO
        if language not in self.languages:
            known = ", ".join(LANGUAGES[code] for code in self.languages)
            raise UserError(f"This model was trained on {known} only, not {LANGUAGES[language]}: set the language to "
                            f"{LANGUAGES[self.languages[0]]}, or choose a model that knows {LANGUAGES[language]}.",
                            code="bad_language")
        return language

    def _transcribe(self, items: list[BatchItem], steps: int, early_exit: bool, seed: int) -> list[Transcript | Exception]:
        m = self.model
        clock = _Clock(m.device)
        longest = m.config.max_chunk_seconds
        chunked = [split_at_pauses(item.audio, max_seconds=longest, min_seconds=longest / 2) for item in items]
        chunks = [chunk for item_chunks in chunked for chunk in item_chunks]
        rows_of, first = [], 0  # each item's rows in the batch of chunks
        for item_chunks in chunked:
            rows_of.append(list(range(first, first + len(item_chunks))))
            first += len(item_chunks)
        outcomes: list[Transcript | Exception | None] = [None] * len(items)
        for i, item in enumerate(items):
            if not rows_of[i]:  # digital silence: nothing to say, and nothing for the model to invent
                outcomes[i] = Transcript(text="", language=item.language, steps_used=0, timings={"total": clock.lap_ms()})
        if not chunks:
            return outcomes

        shared: dict[str, float | list[float]] = {}
        features = m.audio.features(chunks)
        shared["features"] = clock.lap_ms()
        frames = m.audio.encode(features)
        shared["encoder"] = clock.lap_ms()
        languages = [item.language for item in items]
        for i, item in enumerate(items):
            if item.language == AUTO and rows_of[i]:
                languages[i] = m.audio.detect_language(frames[rows_of[i]])
        if AUTO in (item.language for item in items):
            shared["language_id"] = clock.lap_ms()

        # One denoising pass per distinct prompt: language, vocabulary and, with `trim_audio`, the speech's
        # length (a request's longest chunk). A batch never pads one request's speech to a neighbour's
        # length: each request's prompt is the one it gets alone.
        groups: dict[tuple, list[int]] = {}
        for i, item in enumerate(items):
            if rows_of[i]:
                length = max(m.audio.frames_for(len(c)) for c in chunked[i]) if m.config.trim_audio else frames.shape[1]
                groups.setdefault((languages[i], item.vocabulary, length), []).append(i)
        passes = []
        for (language, vocabulary, length), members in groups.items():
            audio_embeds = m.projector(frames[[row for i in members for row in rows_of[i]], :length])
            ids = m.prompt.build(m.config.language_names[language], audio_slots=audio_embeds.shape[1], vocabulary=vocabulary)
            passes.append((members, audio_embeds, ids))
        shared["encoder"] += clock.lap_ms()  # the projector's share

        for members, audio_embeds, ids in passes:
            local, at = {}, 0  # each member's rows within this pass
            for i in members:
                local[i] = list(range(at, at + len(rows_of[i])))
                at += len(rows_of[i])
            padded = list(range(at))
            if len(members) > 1 and self.denoiser.use_graphs:  # a server's batch: a few graph shapes, not one per size
                padded += [at - 1] * (_graph_batch(at) - at)
            prefix = torch.tensor([ids.prefix] * len(padded), device=m.device)
            tail = torch.tensor([ids.tail] * len(padded), device=m.device)
            embeds = embed_prefix(m.backbone.get_input_embeddings(), prefix, audio_embeds[padded], m.config.audio_token_id)
            on_draft = self._drafts(items, members, local, languages, steps, outcomes)
            try:
                result = self.denoiser(embeds, tail, steps=steps, seed=seed, first_position=ids.first_position,
                                       early_exit=early_exit, on_draft=on_draft, label=_shape_label(language, len(padded)))
            except _AllCancelled:
                continue
            clock.lap_ms()  # the denoising itself, reported below split into prefill and steps
            texts = {i: self._text(result.canvases[local[i]], languages[i]) for i in members}
            decode = clock.lap_ms()
            for i in members:
                if outcomes[i] is None:
                    timings = {**shared, "prefill": round(result.prefill_ms, 2),
                               "steps": [round(ms, 2) for ms in result.step_ms], "decode": decode,
                               "total": clock.total_ms(), "batch": len(members)}
                    outcomes[i] = Transcript(text=texts[i], language=languages[i], steps_used=result.steps_used,
                                             timings=timings, language_detected=items[i].language == AUTO)
        return outcomes

    def _drafts(self, items, members, local, languages, steps, outcomes):
        """The denoiser's per-step callback for one pass: each member's draft to its own `on_progress`.

        A callback that raises cancels its own request (its outcome becomes the exception); the pass
        stops only once every member that listens has been cancelled."""
        listening = [i for i in members if items[i].on_progress is not None]
        if not listening:
            return None

        def on_draft(step: int, canvases: torch.Tensor) -> None:
            for i in listening:
                if outcomes[i] is None:
                    try:
                        items[i].on_progress(Progress(step=step, total=steps, draft=self._text(canvases[local[i]], languages[i])))
                    except Exception as exc:
                        outcomes[i] = exc
            if len(listening) == len(members) and all(outcomes[i] is not None for i in members):
                raise _AllCancelled

        return on_draft

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


class _AllCancelled(Exception):
    """Every request of a denoising pass was cancelled: stop the pass."""


def _shape_label(language: str, rows: int) -> str:
    """How the settings window names a prompt shape: its language, and how many canvases share a pass."""
    name = LANGUAGES.get(language, language)
    return name if rows == 1 else f"{name}, {rows} at once"


def _graph_batch(rows: int) -> int:
    """The batch a pass of `rows` canvases runs at when CUDA graphs are used: the next power of two.

    A graph is captured per batch size (seconds each, once); rounding up keeps the sizes a server
    meets to a few (1, 2, 4, 8, ...), and the extra rows repeat the last one and are dropped."""
    return 1 << (rows - 1).bit_length()


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
