"""A recording transcribed in timed segments: the speech server's `srt`, `vtt` and `verbose_json`, and
`transcribe --subtitles`.

The recording is cut where the speech pauses (`app.audio.speech_spans`) and each piece is transcribed on
its own, through any engine (the diffusion engine batches them). With the language left to detection,
the longest piece is transcribed first and its language is every piece's: a language guessed from a
one-word piece would be a guess, and one file is one language in the answer. A recording that is one
segment is transcribed whole, so its text is what a plain transcription gives. With `words`, an engine
that times words (`Engine.times_words`: Whisper on CTranslate2) gives each segment its words' times too,
from the recording's start; the others give none.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from app.audio.speech_spans import Span
from app.engine import Engine, Progress, Transcript
from app.engine.base import AUTO, SAMPLE_RATE, BatchItem, Word, join_texts


@dataclass(frozen=True)
class Segment:
    start: float  # seconds
    end: float
    text: str
    words: tuple[Word, ...] = ()  # each word's time, where they were asked for and the engine times words


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
                        max_batch: int = 8, words: bool = False) -> Segmented:
    """Transcribe each span's audio with `engine`; see the module docstring. `on_progress` raising stops it."""
    timed = {"words": True} if words and getattr(engine, "times_words", False) else {}
    if len(spans) == 1:  # the whole recording, as a `json` answer transcribes it
        whole = engine.transcribe(audio, language=language, steps=steps, on_progress=on_progress, vocabulary=vocabulary,
                                  **timed)
        segment = Segment(spans[0].start, spans[0].end, whole.text.strip(), _placed(whole.words, 0.0, spans[0]))
        return Segmented(whole, (segment,) if segment.text else ())
    pieces = [audio[span.audio_start:span.audio_end] for span in spans]
    texts: dict[int, Transcript] = {}
    if language == AUTO:
        longest = max(range(len(pieces)), key=lambda i: spans[i].end - spans[i].start)
        texts[longest] = engine.transcribe(pieces[longest], language=AUTO, steps=steps, on_progress=on_progress,
                                           vocabulary=vocabulary, **timed)
        language = texts[longest].language
    rest = [i for i in range(len(pieces)) if i not in texts]
    if hasattr(engine, "transcribe_batch") and len(rest) > 1 and not timed:
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
                                         vocabulary=vocabulary, **timed)
    ordered = [texts[i] for i in range(len(pieces))]
    segments = tuple(Segment(span.start, span.end, t.text.strip(), _placed(t.words, span.audio_start / SAMPLE_RATE, span))
                     for span, t in zip(spans, ordered))
    stages = {key for t in ordered for key, value in t.timings.items() if isinstance(value, (int, float))}
    timings = {key: round(sum(float(t.timings.get(key, 0.0)) for t in ordered), 2) for key in stages}
    whole = Transcript(text=join_texts([t.text for t in ordered], language), language=language,
                       steps_used=max(t.steps_used for t in ordered), timings={**timings, "segments": len(ordered)},
                       language_detected=any(t.language_detected for t in ordered))
    return Segmented(whole, tuple(s for s in segments if s.text))


def _placed(words: tuple[Word, ...] | None, by: float, span: Span) -> tuple[Word, ...]:
    """A piece's word times from the recording's start (the piece begins `by` seconds in), kept inside the speech
    the VAD heard: Whisper's alignment puts the first word's start early when the piece begins with a pause
    (0.4 s before the speech, on a sentence after 1.5 s of silence), and the VAD knows better."""
    placed = []
    for w in words or ():
        start = min(max(w.start + by, span.start), span.end)
        placed.append(dataclasses.replace(w, start=round(start, 3), end=round(min(max(w.end + by, start), span.end), 3)))
    return tuple(placed)
