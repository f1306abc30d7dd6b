"""A recording transcribed in timed segments: the speech server's `srt`, `vtt` and `verbose_json`, and
`transcribe --subtitles`.

The recording is cut where the speech pauses (`app.audio.speech_spans`) and each piece is transcribed on
its own, through any engine (the diffusion engine batches them). With the language left to detection,
the longest piece is transcribed first and its language is every piece's: a language guessed from a
one-word piece would be a guess, and one file is one language in the answer. A recording that is one
segment is transcribed whole, so its text is what a plain transcription gives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from app.audio.speech_spans import Span
from app.engine import Engine, Progress, Transcript
from app.engine.base import AUTO, BatchItem, join_texts


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
    """A piece's transcription was cancelled (`on_progress` raised: on the server, its client went away)."""


def transcribe_segments(engine: Engine, audio, spans: list[Span], *, language: str, steps: int | None,
                        vocabulary: tuple[str, ...], on_progress: Callable[[Progress], None] | None = None,
                        max_batch: int = 8) -> Segmented:
    """Transcribe each span's audio with `engine`; see the module docstring. `on_progress` raising stops it."""
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
