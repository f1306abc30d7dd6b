"""Where the speech is in a whole recording: the segments of the server's srt, vtt and verbose_json.

Subtitles need their text in pieces, each with the time it was spoken. Silero VAD finds the speech
(the same model as the silence check, `app.audio.vad`) to within one 32 ms window, more exactly than
Whisper's timestamp tokens, and for every engine alike: the diffusion engine writes no timestamps.
Speech runs closer than `MIN_GAP_S` are one segment; a run longer than `MAX_SEGMENT_S` is cut at its
least speech-like window in its second half, between words. Each segment is transcribed on its own.

The audio is cut at the middle of each pause, so every sample belongs to one segment's `audio` and no
quiet word the VAD missed is dropped; `start` and `end` are the speech inside it, `PAD_S` wider.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.audio.vad import CONTEXT, MIN_SPEECH_WINDOWS, THRESHOLD, WINDOW, VadModel
from app.engine.base import SAMPLE_RATE

MIN_GAP_S = 0.5  # a shorter pause is between words of one segment
MAX_SEGMENT_S = 10.0  # a subtitle cue, or Whisper's own segments, seldom run longer
PAD_S = 0.15  # the times given reach this far beyond the speech (a word's soft start and end)


@dataclass(frozen=True)
class Span:
    """One segment: `audio_start:audio_end` are the samples to transcribe, `start`-`end` (seconds) when it was
    spoken."""

    audio_start: int
    audio_end: int
    start: float
    end: float

    @classmethod
    def whole(cls, audio: np.ndarray) -> "Span":
        """All of `audio` as one segment: for a caller that transcribes it though no speech was found."""
        return cls(0, len(audio), 0.0, len(audio) / SAMPLE_RATE)


def speech_probabilities(audio: np.ndarray, model: VadModel | None = None) -> np.ndarray:
    """Silero's speech probability of each 32 ms window of a 16 kHz recording, in one pass (~0.3 ms a window)."""
    model = model or VadModel.shared()
    windows = -(-len(audio) // WINDOW)
    padded = np.zeros(CONTEXT + windows * WINDOW, dtype=np.float32)
    padded[CONTEXT:CONTEXT + len(audio)] = audio
    state = np.zeros((2, 1, 128), dtype=np.float32)
    probs = np.empty(windows, dtype=np.float32)
    for i in range(windows):
        probs[i], state = model.step(padded[i * WINDOW:i * WINDOW + CONTEXT + WINDOW], state)
    return probs


def speech_spans(audio: np.ndarray, probs: np.ndarray | None = None) -> list[Span]:
    """The segments of `audio` (see the module docstring); [] when it holds no speech."""
    probs = speech_probabilities(audio) if probs is None else probs
    runs = _merge(_runs(probs >= THRESHOLD), int(MIN_GAP_S * SAMPLE_RATE / WINDOW))
    runs = [run for run in runs if run[1] - run[0] >= MIN_SPEECH_WINDOWS]  # a click or a breath is no segment
    runs = [piece for run in runs for piece in _cut_long(run, probs, int(MAX_SEGMENT_S * SAMPLE_RATE / WINDOW))]
    if not runs:
        return []
    # The audio is cut in the middle of each pause between runs (or where a long run was cut).
    cuts = [0] + [(a[1] + b[0]) * WINDOW // 2 for a, b in zip(runs, runs[1:])] + [len(audio)]
    pad = int(PAD_S * SAMPLE_RATE)
    spans = []
    for (first, last), low, high in zip(runs, cuts, cuts[1:]):
        start, end = max(low, first * WINDOW - pad), min(high, last * WINDOW + pad)
        spans.append(Span(low, high, start / SAMPLE_RATE, end / SAMPLE_RATE))
    return spans


def _runs(speech: np.ndarray) -> list[tuple[int, int]]:
    """(first, end) window indices of each run of speech-like windows."""
    edges = np.diff(np.concatenate([[0], speech.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def _merge(runs: list[tuple[int, int]], min_gap: int) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for first, end in runs:
        if merged and first - merged[-1][1] < min_gap:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((first, end))
    return merged


def _cut_long(run: tuple[int, int], probs: np.ndarray, longest: int) -> list[tuple[int, int]]:
    """A run of more than `longest` windows cut at its least speech-like window in the second half of each
    `longest` stretch (the latest of equals), so pieces stay long and cuts fall between words."""
    pieces = []
    first, end = run
    while end - first > longest:
        stretch = probs[first + longest // 2:first + longest]
        cut = first + longest // 2 + len(stretch) - 1 - int(np.argmin(stretch[::-1]))
        pieces.append((first, cut))
        first = cut
    pieces.append((first, end))
    return pieces
