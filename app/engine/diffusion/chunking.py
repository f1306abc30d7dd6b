"""Split long audio at pauses into windows the Whisper encoder can take (`join_texts` joins their texts).

The Whisper encoder sees at most 30 s. Longer audio is cut at the quietest point (lowest short-time
energy, the latest one on ties) in the second half of each 30 s stretch, so words are rarely cut and
chunks stay long. The
chunks are then denoised together as one batch: one canvas per chunk, same number of steps.
"""

from __future__ import annotations

import numpy as np

from app.engine.base import SAMPLE_RATE

MAX_CHUNK_SECONDS = 30.0
# Cuts are searched in [MIN_CHUNK_SECONDS, MAX_CHUNK_SECONDS] after the chunk start.
MIN_CHUNK_SECONDS = 15.0
FRAME_SECONDS = 0.02
# Peak below this (about -80 dBFS) is digital silence: nothing to transcribe, nothing to hallucinate.
SILENCE_PEAK = 1e-4


def is_silent(audio: np.ndarray) -> bool:
    return audio.size == 0 or float(np.max(np.abs(audio))) < SILENCE_PEAK


def split_at_pauses(
    audio: np.ndarray,
    *,
    rate: int = SAMPLE_RATE,
    max_seconds: float = MAX_CHUNK_SECONDS,
    min_seconds: float = MIN_CHUNK_SECONDS,
) -> list[np.ndarray]:
    """Chunks of at most `max_seconds`, cut at the lowest-energy frame; silent chunks are dropped."""
    max_len, min_len = int(max_seconds * rate), int(min_seconds * rate)
    frame = max(1, int(FRAME_SECONDS * rate))
    chunks = []
    start = 0
    while audio.shape[0] - start > max_len:
        window = audio[start + min_len : start + max_len]
        energy = _frame_energy(window, frame)
        quietest = len(energy) - 1 - int(np.argmin(energy[::-1]))  # the latest of equally quiet frames
        cut = start + min_len + quietest * frame + frame // 2
        chunks.append(audio[start:cut])
        start = cut
    chunks.append(audio[start:])
    return [chunk for chunk in chunks if not is_silent(chunk)]


def _frame_energy(audio: np.ndarray, frame: int) -> np.ndarray:
    frames = audio[: (audio.shape[0] // frame) * frame].reshape(-1, frame)
    return np.mean(frames.astype(np.float64) ** 2, axis=1)
