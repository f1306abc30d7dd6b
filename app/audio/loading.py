"""Read an audio file into the engine's audio contract (float32, mono, 16 kHz).

soundfile (libsndfile) decodes WAV, FLAC and OGG/Opus; soxr resamples with a proper band-limited
filter (linear interpolation would alias and cost accuracy).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from app.engine.base import SAMPLE_RATE
from app.errors import UserError


def resample(audio: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Resample mono float32 audio from `rate` to `target` Hz (no-op when equal)."""
    if rate == target:
        return audio.astype(np.float32, copy=False)
    return soxr.resample(audio, rate, target, quality="HQ").astype(np.float32, copy=False)


def to_mono(audio: np.ndarray) -> np.ndarray:
    """Average the channels of a (frames, channels) array; pass 1-D audio through."""
    return audio if audio.ndim == 1 else audio.mean(axis=1)


def load_audio(path: str | Path) -> np.ndarray:
    """Load `path` as float32 mono 16 kHz, or raise a UserError that names the file and the fix."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"No such file: {p}. Check the path and try again.", code="no_file")
    if p.is_dir():
        raise UserError(f"{p} is a folder, not an audio file; give the path of a recording (WAV, FLAC, OGG or MP3).",
                        code="not_audio")
    try:
        data, rate = sf.read(str(p), dtype="float32", always_2d=False)
    except sf.LibsndfileError as exc:
        if p.stat().st_size == 0:
            raise UserError(f"{p} is an empty file: record or choose another one.", code="empty_audio") from exc
        raise UserError(
            f"{p} is not a readable audio file ({exc.error_string.strip().rstrip('.')}); "
            "use WAV, FLAC or OGG.",
            code="not_audio",
        ) from exc
    except (RuntimeError, TypeError, ValueError) as exc:
        raise UserError(f"{p} could not be decoded as audio ({exc}); the file may be corrupt.", code="not_audio") from exc
    if data.size == 0:
        raise UserError(f"{p} holds no audio samples; give a recording with sound in it.", code="empty_audio")
    audio = resample(to_mono(np.asarray(data, dtype=np.float32)), int(rate))
    if not np.all(np.isfinite(audio)):
        raise UserError(f"{p} contains invalid samples (NaN or infinity); the file may be corrupt.", code="not_audio")
    return audio
