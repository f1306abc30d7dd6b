"""Answers in timed segments: `srt`, `vtt`, and the `segments` of `verbose_json`.

The recording is cut where the speech pauses (`app.audio.speech_spans`) and each piece is transcribed on
its own, through whichever engine the server runs (the diffusion engine batches them). With the
language left to detection, the longest piece is transcribed first and its language is every piece's:
a language guessed from a one-word piece would be a guess, and one file is one language in the answer.
A recording that is one segment is transcribed whole, so its text is the plain `json` answer's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from app.audio.speech_spans import Span
from app.engine import Engine, Progress, Transcript
from app.engine.base import AUTO, BatchItem, join_texts

SEGMENTED_FORMATS = ("verbose_json", "srt", "vtt")


@dataclass(frozen=True)
class Segment:
    start: float  # seconds
    end: float
    text: str


@dataclass(frozen=True)
class Segmented:
    """A transcript with its segments: the whole text (the segments' texts joined), each stage's time summed over
    the pieces (`segments`: how many there were)."""

    transcript: Transcript
    segments: tuple[Segment, ...]


class Stopped(Exception):
    """A piece's transcription was cancelled (its client went away)."""


def transcribe_segments(engine: Engine, audio, spans: list[Span], *, language: str, steps: int | None,
                        vocabulary: tuple[str, ...], on_progress: Callable[[Progress], None],
                        max_batch: int) -> Segmented:
    """Transcribe each span's audio with `engine` (on the engine thread); see the module docstring."""
    if len(spans) == 1:  # the whole recording, as a `json` answer transcribes it
        whole = engine.transcribe(audio, language=language, steps=steps, on_progress=on_progress, vocabulary=vocabulary)
        segment = Segment(spans[0].start, spans[0].end, whole.text.strip())
        return Segmented(whole, (segment,) if segment.text else ())
    pieces = [audio[span.audio_start:span.audio_end] for span in spans]
    texts: dict[int, Transcript] = {}
    if language == AUTO:
        longest = max(range(len(pieces)), key=lambda i: spans[i].end - spans[i].start)
        texts[longest] = engine.transcribe(pieces[longest], language=AUTO, steps=steps, on_progress=on_progress,
                                           vocabulary=vocabulary)
        language = texts[longest].language
    rest = [i for i in range(len(pieces)) if i not in texts]
    if hasattr(engine, "transcribe_batch") and len(rest) > 1:
        for at in range(0, len(rest), max_batch):
            batch = rest[at:at + max_batch]
            items = [BatchItem(pieces[i], language, vocabulary, on_progress) for i in batch]
            for i, transcript in zip(batch, engine.transcribe_batch(items, steps=steps)):
                if transcript is None:
                    raise Stopped
                texts[i] = transcript
    else:
        for i in rest:
            texts[i] = engine.transcribe(pieces[i], language=language, steps=steps, on_progress=on_progress,
                                         vocabulary=vocabulary)
    ordered = [texts[i] for i in range(len(pieces))]
    segments = tuple(Segment(span.start, span.end, t.text.strip()) for span, t in zip(spans, ordered))
    stages = {key for t in ordered for key, value in t.timings.items() if isinstance(value, (int, float))}
    timings = {key: round(sum(float(t.timings.get(key, 0.0)) for t in ordered), 2) for key in stages}
    whole = Transcript(text=join_texts([t.text for t in ordered], language), language=language,
                       steps_used=max(t.steps_used for t in ordered), timings={**timings, "segments": len(ordered)},
                       language_detected=any(t.language_detected for t in ordered))
    return Segmented(whole, tuple(s for s in segments if s.text))


def srt(segments: tuple[Segment, ...]) -> str:
    """SubRip: numbered cues, times as HH:MM:SS,mmm."""
    return "".join(f"{n}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{s.text}\n\n"
                   for n, s in enumerate(segments, 1))


def vtt(segments: tuple[Segment, ...]) -> str:
    """WebVTT: the header, then cues with times as HH:MM:SS.mmm."""
    return "WEBVTT\n\n" + "".join(f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{s.text}\n\n" for s in segments)


def openai_segments(segments: tuple[Segment, ...]) -> list[dict]:
    """`verbose_json`'s segments, with the fields of OpenAI's that this server knows (no token ids, no
    log probabilities: the engines do not report them)."""
    return [{"id": n, "seek": 0, "start": round(s.start, 3), "end": round(s.end, 3), "text": s.text, "tokens": [],
             "temperature": 0.0} for n, s in enumerate(segments)]


def _clock(seconds: float, comma: str) -> str:
    ms = int(round(seconds * 1000))
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}{comma}{ms % 1000:03d}"
