"""What a transcription request asks for, checked field by field before it may wait for the engine.

Every problem becomes an `ApiError` with a 4xx status and one sentence, so a bad upload never
reaches the model and never costs the server more than reading it. Audio is decoded by libsndfile
(WAV, FLAC, OGG/Opus, MP3) and resampled with soxr, exactly as `app.audio.loading` does for files.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from app.audio.loading import resample, to_mono
from app.audio.speech_spans import Span
from app.engine.base import AUTO, LANGUAGES, SAMPLE_RATE
from app.server.api_errors import ApiError

RESPONSE_FORMATS = ("json", "text", "verbose_json", "srt", "vtt")
SEGMENTED_FORMATS = ("verbose_json", "srt", "vtt")  # answered in timed segments (`app.engine.segments`)
GRANULARITIES = ("segment", "word")  # OpenAI's timestamp_granularities[]
STEPS_RANGE = (1, 48)  # the diffusion engine's; Settings' "Quality (steps)" has the same bounds
OPENAI_ALIAS = "whisper-1"  # the model name existing OpenAI clients send


@dataclass(frozen=True)
class TranscriptionRequest:
    """One checked request: the audio in the engine's contract and what to do with it."""

    audio: np.ndarray
    language: str
    steps: int | None
    response_format: str
    stream: bool
    vocabulary: tuple[str, ...]
    # A transcription ahead of the end of a dictation (the speaker paused with the key held): it waits
    # behind every other request and gives way to any that comes (`app.server.batching`).
    speculative: bool = False
    client: str = ""  # who sent it: a request replaces its own client's earlier speculative ones
    # Where the speech is, for an answer in timed segments (`app.engine.segments`); None: one text.
    spans: tuple[Span, ...] | None = None
    # The timestamp granularities verbose_json answers with; `words` (each word's time, where the engine times
    # words) is also taken for srt and vtt, whose cues it cuts to a readable length.
    granularities: tuple[str, ...] = ("segment",)
    words: bool = False

    @property
    def seconds(self) -> float:
        return len(self.audio) / SAMPLE_RATE


def check_model(name: str | None, served_id: str) -> None:
    """404 `model_not_found` for a name that is neither the served model's id nor OpenAI's alias."""
    if not name:
        raise ApiError(400, f"The field 'model' is missing; send '{served_id}' (or '{OPENAI_ALIAS}').",
                       "missing_model", param="model")
    if name not in (served_id, OPENAI_ALIAS):
        raise ApiError(404, f"The model '{name}' does not exist on this server; it serves '{served_id}' "
                       f"(also reachable as '{OPENAI_ALIAS}'), see GET /v1/models.", "model_not_found", param="model")


def check_language(value: str | None) -> str:
    lang = (value or AUTO).strip().lower()
    if lang == AUTO or lang in LANGUAGES:
        return lang
    raise ApiError(400, f"The language '{value}' is not supported; send one of {', '.join(LANGUAGES)} "
                   "(ISO 639-1), or leave it out to detect it.", "unsupported_language", param="language")


def check_steps(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    low, high = STEPS_RANGE
    try:
        steps = int(value)
    except ValueError:
        steps = None
    if steps is None or not low <= steps <= high:
        raise ApiError(400, f"'steps' must be a whole number from {low} to {high}, not {value!r}.",
                       "invalid_steps", param="steps")
    return steps


def check_format(value: str | None) -> str:
    fmt = (value or "json").strip().lower()
    if fmt not in RESPONSE_FORMATS:
        raise ApiError(400, f"The response_format '{value}' is not supported; send one of "
                       f"{', '.join(RESPONSE_FORMATS)}.", "unsupported_response_format", param="response_format")
    return fmt


def check_stream(fmt: str, stream: bool) -> None:
    """A streamed answer is text events; subtitles come whole."""
    if stream and fmt in ("srt", "vtt"):
        raise ApiError(400, f"The response_format '{fmt}' cannot be streamed; leave out 'stream', or stream json.",
                       "unsupported_response_format", param="response_format")


def check_granularities(values: list[str], fmt: str, engine_times_words: bool, engine: str) -> tuple[str, ...]:
    """`timestamp_granularities[]`: segment (the default), word, or both; only with verbose_json, as OpenAI's
    API; word only where the engine times words."""
    asked = tuple(dict.fromkeys(v.strip().lower() for v in values if v.strip())) or ("segment",)
    unknown = [v for v in asked if v not in GRANULARITIES]
    if unknown:
        raise ApiError(400, f"The timestamp granularity '{unknown[0]}' is not supported; send segment, word or both.",
                       "invalid_timestamp_granularities", param="timestamp_granularities")
    if values and fmt != "verbose_json":
        raise ApiError(400, "timestamp_granularities needs response_format verbose_json.",
                       "invalid_timestamp_granularities", param="timestamp_granularities")
    if "word" in asked and not engine_times_words:
        raise ApiError(400, f"This server's engine ({engine}) does not time words, so it answers with segment "
                       "timestamps only; leave out 'word', or use a server that runs the faster-whisper engine.",
                       "unsupported_timestamp_granularities", param="timestamp_granularities")
    return asked


def check_flag(value: str | None, name: str) -> bool:
    """A true/false form field (`stream`, `speculative`); absent is false."""
    flag = (value or "false").strip().lower()
    if flag not in ("true", "false", "1", "0"):
        raise ApiError(400, f"'{name}' must be true or false, not {value!r}.", f"invalid_{name}", param=name)
    return flag in ("true", "1")


def check_client(value: str | None) -> str:
    """The `client` field: an id its sender chose (up to 64 letters, digits, '-' or '_'); empty if absent."""
    client = (value or "").strip()
    if not re.fullmatch(r"[A-Za-z0-9_-]{0,64}", client):
        raise ApiError(400, "'client' must be an id of at most 64 letters, digits, '-' or '_'.", "invalid_client",
                       param="client")
    return client


def vocabulary(prompt: str | None) -> tuple[str, ...]:
    """The `prompt` field as the engine's vocabulary: one entry per comma- or line-separated item."""
    return tuple(item.strip() for item in re.split(r"[,\n]", prompt or "") if item.strip())


def decode_audio(data: bytes, filename: str) -> np.ndarray:
    """The uploaded bytes as 16 kHz mono float32, or a 400 that says what is wrong with the file.

    `filename` is only quoted back in messages: nothing is ever read from or written to it.
    """
    shown = (filename or "the upload")[:80]
    if not data:
        raise ApiError(400, f"The file '{shown}' is empty: send a recording with sound in it.", "empty_file",
                       param="file")
    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=False)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        raise ApiError(400, f"The file '{shown}' is not audio this server can read; send WAV, FLAC, OGG or MP3.",
                       "invalid_audio", param="file") from None
    if samples.size == 0:
        raise ApiError(400, f"The file '{shown}' holds no audio samples; send a recording with sound in it.",
                       "empty_audio", param="file")
    audio = resample(to_mono(np.asarray(samples, dtype=np.float32)), int(rate))
    if not np.all(np.isfinite(audio)):
        raise ApiError(400, f"The file '{shown}' contains invalid samples (NaN or infinity); it may be corrupt.",
                       "invalid_audio", param="file")
    return audio
