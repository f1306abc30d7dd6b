"""The engine interface: one `transcribe()` call over a hidden model.

Every engine (diffusion main, Whisper fallback) takes the same audio contract and returns the same
`Transcript`, so the worker, the CLI and the benchmarks never care which model is behind it.

Audio contract: a 1-D float32 numpy array, mono, 16 kHz, values in [-1, 1].
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Protocol, Sequence

import numpy as np

from app.errors import UserError

SAMPLE_RATE = 16_000

# The six languages the product supports, as ISO 639-1 codes, plus "auto" (detect).
LANGUAGES: dict[str, str] = {
    "en": "English",
    "de": "German",
    "fr": "French",
    "es": "Spanish",
    "hi": "Hindi",
    "zh": "Mandarin",
}
AUTO = "auto"
_NO_SPACE_LANGUAGES = {"zh"}  # scripts written without spaces between words

# Whisper decodes at most 448 tokens per 30 s window. A clip gets a budget in proportion to its length
# (generous even for Hindi, whose script costs several tokens a word), so a hallucination loop on a
# short clip ("very very very ...") ends after a second instead of running to 440 tokens. Both Whisper
# backends use it, so they stop at the same point.
MAX_NEW_TOKENS = 440
TOKENS_PER_SECOND = 25
MIN_NEW_TOKENS_BUDGET = 16


@dataclass(frozen=True)
class Progress:
    """One step of a transcription, for live previews: step k of at most `total`, and the draft."""

    step: int
    total: int
    draft: str


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class Word:
    """A word of a transcript and when it was said, in seconds from the audio's start (subtitle cues, and the
    speech server's word timestamps). `text` is the word as written, with the punctuation that clings to it and
    the space before it where there is one (" ill", "-disposed": joined, "ill-disposed")."""

    start: float
    end: float
    text: str


@dataclass
class Transcript:
    """What every engine returns.

    `steps_used` is the number of decoding passes actually run: denoising steps for the diffusion
    engine (it may exit early), generated tokens for autoregressive Whisper. `timings` holds
    milliseconds: `features`, `encoder`, `decode`, `total`, and for diffusion `prefill` and the list
    `steps` (one entry per denoising step). `words` is each word's time where the engine was asked for them
    (`transcribe(..., words=True)`) and can tell (`Engine.times_words`); None otherwise.
    """

    text: str
    language: str
    steps_used: int
    timings: dict[str, float | list[float]] = field(default_factory=dict)
    language_detected: bool = False
    words: tuple[Word, ...] | None = None

    def to_dict(self) -> dict:
        """The fields as plain values (the worker's `result` frame, the CLI's --json); `words` only when timed."""
        fields = asdict(self)
        if self.words is None:
            del fields["words"]
        return fields


@dataclass(frozen=True)
class BatchItem:
    """One request of a batch (`transcribe_batch`, where an engine has it): what `transcribe` takes
    for one recording. Its `on_progress` raising cancels this request only, not its neighbours."""

    audio: np.ndarray
    language: str = AUTO
    vocabulary: tuple[str, ...] = ()
    on_progress: ProgressCallback | None = None


@dataclass(frozen=True)
class Preparation:
    """One piece of speed-up work an engine does after it is ready, such as capturing the CUDA graphs
    for one prompt shape or compiling its layers for that shape.

    Each piece takes seconds, so no dictation should wait for it: the worker (and the speech server) run the
    pieces one at a time, and until a shape's pieces have run, jobs of that shape take the engine's eager path
    (the same text, slower). A piece with `alongside_jobs` (a compile) runs on a thread of its own while jobs go
    on (a seeded job meanwhile may get another, equally likely draw: Dynamo sets the process's random state back
    when it finishes compiling a frame); any other (a CUDA graph capture, which records whatever the GPU runs
    meanwhile) runs only while no job is waiting, so a job waits for one such piece at most. `run` never raises
    for what can happen on a user's machine (out of GPU memory, a capture or compile that fails): the engine
    then keeps the eager path and logs why.
    """

    label: str  # what it does, for the settings window: "GPU graphs for English"
    run: Callable[[], None]
    alongside_jobs: bool = False


class Engine(Protocol):
    """A loaded speech model. `transcribe` may be called many times; the model stays warm."""

    name: str
    # The product's languages (codes of LANGUAGES) this model transcribes: an English-only Whisper or
    # adapter has ("en",). The settings window warns when the chosen language is not among them.
    languages: tuple[str, ...]
    # Whether `transcribe(..., words=True)` times each word: Whisper aligns its text with the audio through its
    # cross-attention; the diffusion engine writes its text all at once and knows no word's time.
    times_words: bool

    def preparations(self) -> list[Preparation]:
        """The speed-up pieces still to do, in the order to run them; [] when there are none (the
        Whisper engines, the CPU). A dictation of a new shape can add pieces, so ask again after each job."""
        ...

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
        """`vocabulary`: words and names the speaker uses (the user's word list, or an API request's
        `prompt`); an engine conditions on them where its model can, and ignores them otherwise. `words`: also
        time each word (`Transcript.words`), where the engine `times_words`; others ignore it."""
        ...


def prepare_all(engine: Engine) -> float:
    """Run every pending preparation now, for a process that transcribes at once (the CLI, benchmarks);
    the worker runs them while idle instead. Returns the seconds spent."""
    started = time.perf_counter()
    while pieces := engine.preparations():
        for piece in pieces:
            piece.run()
    return time.perf_counter() - started


def check_language(language: str) -> str:
    """Normalise a language choice, or say which ones exist."""
    lang = (language or AUTO).strip().lower()
    if lang == AUTO or lang in LANGUAGES:
        return lang
    choices = ", ".join([AUTO, *LANGUAGES])
    raise UserError(f"Unknown language '{language}'. Choose one of: {choices}.", code="bad_language")


def join_texts(texts: list[str], language: str) -> str:
    """The texts of consecutive pieces of one recording as one text (Mandarin is written without spaces)."""
    separator = "" if language in _NO_SPACE_LANGUAGES else " "
    return separator.join(t.strip() for t in texts if t.strip())


def check_audio(audio: np.ndarray) -> np.ndarray:
    """Enforce the audio contract at the engine boundary, with errors a user can act on."""
    arr = np.asarray(audio)
    if arr.ndim != 1:
        raise UserError("Audio must be mono (one channel); downmix it first.", code="bad_audio")
    if arr.size == 0:
        raise UserError("The audio is empty: there is nothing to transcribe.", code="empty_audio")
    if not np.all(np.isfinite(arr)):
        raise UserError("The audio contains invalid samples (NaN or infinity).", code="bad_audio")
    return arr.astype(np.float32, copy=False)


def stage_timings(t0: float, t_features: float, t_encoder: float, t_decode: float) -> dict[str, float]:
    """The `timings` of a Transcript (milliseconds) from `time.perf_counter()` marks between the stages."""
    ms = lambda a, b: round((b - a) * 1000.0, 2)  # noqa: E731
    return {"features": ms(t0, t_features), "encoder": ms(t_features, t_encoder), "decode": ms(t_encoder, t_decode),
            "total": ms(t0, t_decode)}


def token_budget(samples: int) -> int:
    """The most tokens Whisper may write for `samples` of 16 kHz audio in one 30 s window."""
    return min(MAX_NEW_TOKENS, MIN_NEW_TOKENS_BUDGET + int(TOKENS_PER_SECOND * samples / SAMPLE_RATE))


def english_only(language: str) -> str:
    """The language an English-only Whisper model transcribes in, or the sentence that says why not."""
    if language not in (AUTO, "en"):
        raise UserError(
            f"This Whisper model only understands English, not {LANGUAGES[language]}; choose a multilingual "
            "model (for example openai/whisper-base) or set the language to English.",
            code="bad_language",
        )
    return "en"
