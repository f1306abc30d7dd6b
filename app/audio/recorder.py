"""Recordings cut from a continuous 16 kHz stream: pre-roll, post-roll, length limit, speech check.

The audio source delivers blocks on its own thread; each block is downmixed, resampled to 16 kHz
(streaming soxr, so no clicks at block edges), written to a ring buffer (the pre-roll) and appended
to every recording still open. A recording ends up to `post_roll_ms` after the key was really
released, so that the last word is not cut off, but no longer than the speech goes on: when the
speech check had already heard the speech end before the release, the recording ends with the
next block; when the speaker is still talking, it ends as soon as the check hears them stop. Recordings may overlap (a new one can begin during the
previous one's post-roll), which is what lets the controller queue dictations instead of dropping
them. The speech check runs block by block, so its verdict is ready when the recording ends.

With a cold microphone the source is opened at `begin` and closed once no recording needs it;
with a warm one it stays open and the ring buffer holds the audio from just before the press.

Hands-free stop (`auto_stop_s`): the speech check also says when the speaker has been silent that
long after speaking; `on_silence(rec_id)` tells the controller, which ends a recording that no held
key is keeping open. Such a recording is cut at the end of its speech plus the post-roll: the seconds
of silence that ended it would only cost the engine time (and tempt it to invent words).

Early transcription (`early`): each time the speech check hears the speaker stop while the key is
still held, `on_pause(rec_id, audio)` gets the recording so far, for the worker to transcribe while
the user decides whether to go on (`app.worker.early`). If nothing more is said before the recording
ends, it is handed over cut to exactly those samples (what follows them is silence), so the job finds
its transcript ready; if the speaker goes on, the recording is delivered whole, as without it.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from app.audio.ringbuffer import RingBuffer
from app.audio.sources import AudioSource
from app.audio.vad import SpeechDetector
from app.controller import RecordingResult
from app.engine.base import SAMPLE_RATE

log = logging.getLogger(__name__)


@dataclass
class RecorderOptions:
    pre_roll_ms: int = 300
    post_roll_ms: int = 300
    max_seconds: int = 120
    warm: bool = False
    skip_silence: bool = True
    auto_stop_s: float = 0.0  # say so after this long without speech, once there was speech (0: never)
    early: bool = False  # at each pause with the key held, hand `on_pause` the recording so far


@dataclass
class _Take:
    """One recording in progress."""

    rec_id: int
    chunks: list[np.ndarray]
    length: int
    detector: SpeechDetector | None
    remaining: int | None = None  # post-roll samples still to record once ended
    post_roll_from: int | None = None  # the length when the key was released
    hit_limit: bool = False
    new: list[np.ndarray] = field(default_factory=list)  # appended but not yet given to the detector
    silence_said: bool = False  # on_silence was called for this take
    paused_at: int | None = None  # the length at the latest pause handed to on_pause
    paused_end: int = -1  # the detector's speech_end then: unchanged at the end means nothing was said since


class Recorder:
    """Thread-safe: `begin/end/discard/configure` come from the GUI thread, blocks from the source's."""

    def __init__(self, source: AudioSource, on_finished: Callable[[RecordingResult], None],
                 options: RecorderOptions | None = None, *, on_silence: Callable[[int], None] | None = None,
                 on_pause: Callable[[int, np.ndarray], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.source = source
        self.on_finished = on_finished
        self.on_silence = on_silence
        self.on_pause = on_pause
        self.options = options or RecorderOptions()
        self.clock = clock
        self.level_db = -100.0  # input level of the newest block, dBFS
        self._ids = itertools.count(1)
        self._takes: dict[int, _Take] = {}
        self._ring = RingBuffer(0)
        self._resampler = None
        self._running = False
        self._lost = False  # the source ended by itself: the next recording opens it afresh
        self._lock = threading.Lock()  # guards takes and ring (GUI thread vs audio thread)
        # Serialises opening and closing the source; `begin` holds it until its recording is registered, so that
        # a close decided by the recording before (`_close_if_idle`) cannot stop the source under the new one.
        self._source_lock = threading.RLock()
        self.configure(self.options)

    def configure(self, options: RecorderOptions) -> None:
        """Apply new settings; opens or closes a warm microphone as needed."""
        with self._lock:
            self.options = options
            self._ring = RingBuffer(options.pre_roll_ms * SAMPLE_RATE // 1000 if options.warm else 0)
        if options.warm:
            self._open()
        else:
            self._close_if_idle()

    # ---- GUI thread ------------------------------------------------------------------------------
    def begin(self) -> int:
        """Start a recording (with whatever pre-roll the ring holds); raises UserError if the mic fails."""
        with self._source_lock:
            self._open()
            rec_id = next(self._ids)
            detector = SpeechDetector() if self.options.skip_silence or self.options.auto_stop_s else None
            with self._lock:
                pre = self._ring.latest(self.options.pre_roll_ms * SAMPLE_RATE // 1000)
                self._takes[rec_id] = _Take(rec_id, [pre], len(pre), detector, new=[pre])
        return rec_id

    def end(self, rec_id: int, released_at: float | None = None) -> None:
        """Stop after the post-roll, counted from `released_at` (the real key release) when given."""
        late = 0.0 if released_at is None else max(0.0, self.clock() - released_at)
        with self._lock:
            take = self._takes.get(rec_id)
            if take is not None and take.remaining is None:
                take.remaining = max(0, int((self.options.post_roll_ms / 1000 - late) * SAMPLE_RATE))
                if take.detector is not None and take.detector.ended:  # the speaker had stopped already
                    take.remaining = 0  # delivered with the next block (BLOCK_SECONDS)
                take.post_roll_from = take.length

    def discard(self, rec_id: int) -> None:
        with self._lock:
            self._takes.pop(rec_id, None)
        self._close_if_idle()

    def close(self) -> None:
        """Stop everything (application exit)."""
        with self._lock:
            self._takes.clear()
        with self._source_lock:
            if self._running:
                self._running = False
                self.source.stop()

    # ---- source lifecycle --------------------------------------------------------------------
    def _open(self) -> None:
        with self._source_lock:
            if self._running and not self._lost:
                return
            if self._running:  # what is left of a source that ended by itself
                self._running = False
                self.source.stop()
            self._lost = False
            with self._lock:
                self._ring.clear()
            self._resampler = None
            self.source.start(self._on_block, self._on_lost)
            self._running = True
            if self.source.rate != SAMPLE_RATE:
                import soxr

                self._resampler = soxr.ResampleStream(self.source.rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
            log.info("audio source opened at %d Hz", self.source.rate)

    def _close_if_idle(self) -> None:
        with self._source_lock:
            with self._lock:
                if not self._running or self._takes or self.options.warm:
                    return
                self._running = False
            self.source.stop()
            log.info("audio source closed")

    # ---- audio thread ------------------------------------------------------------------------
    def _on_block(self, block: np.ndarray) -> None:
        # Downmixed here rather than with loading.to_mono: importing that module loads libsndfile,
        # which would cost GUI start-up time for a one-line average.
        mono = (block[:, 0] if block.shape[1] == 1 else block.mean(axis=1)).astype(np.float32, copy=False)
        if self._resampler is not None:
            mono = self._resampler.resample_chunk(mono)
        if len(mono):
            self.level_db = float(20 * np.log10(np.sqrt(np.mean(mono * mono)) + 1e-10))
        max_samples = self.options.max_seconds * SAMPLE_RATE
        done: list[_Take] = []
        with self._lock:
            self._ring.write(mono)
            takes = list(self._takes.values())
            for take in takes:
                want = max_samples - take.length if take.remaining is None else take.remaining
                piece = mono[:max(0, want)]
                if len(piece):
                    take.chunks.append(piece)
                    take.new.append(piece)
                    take.length += len(piece)
                if take.remaining is None and take.length >= max_samples:
                    take.remaining, take.hit_limit = 0, True
                elif take.remaining is not None:
                    take.remaining -= len(piece)
                if take.remaining == 0:
                    done.append(self._takes.pop(take.rec_id))
        for take in takes:  # the speech check runs outside the lock, on this thread only
            if take.detector is not None and take.new:
                pieces, take.new = take.new, []
                try:
                    take.detector.feed(np.concatenate(pieces))
                except Exception:  # never let the check kill the audio stream or lose the dictation
                    log.exception("speech check failed; this recording will be transcribed unchecked")
                    take.detector = None
            if (self.options.auto_stop_s and take.remaining is None and not take.silence_said
                    and take.detector is not None and take.detector.silent_s >= self.options.auto_stop_s):
                take.silence_said = True
                log.info("recording %d: %.1f s without speech after speaking (Stop after silence)", take.rec_id,
                         take.detector.silent_s)
                if self.on_silence is not None:
                    self.on_silence(take.rec_id)
            detector = take.detector
            if (self.options.early and self.on_pause is not None and take.remaining is None
                    and detector is not None and detector.ended and take.paused_end != detector.speech_end):
                take.paused_at, take.paused_end = take.length, take.detector.speech_end
                self.on_pause(take.rec_id, np.concatenate(take.chunks))  # chunks grow on this thread only
            if take.remaining and take.detector is not None and take.detector.ended:  # stopped talking
                with self._lock:
                    if self._takes.pop(take.rec_id, None) is take:
                        done.append(take)
        for take in done:
            self._deliver(take)
        if done:
            threading.Thread(target=self._close_if_idle, name="audio-close", daemon=True).start()

    def _on_lost(self) -> None:
        """The source ended by itself (microphone unplugged or failing): no block will come, so hand over every
        open recording with what it holds now, rather than waiting for its end forever, and have the next
        recording open the source afresh (which says what is wrong if it still cannot). Source's thread."""
        log.warning("audio source stopped by itself (device gone or failing)")
        self._lost = True
        with self._lock:
            takes, self._takes = list(self._takes.values()), {}
        for take in takes:
            self._deliver(take, source_lost=True)
        threading.Thread(target=self._close_if_idle, name="audio-close", daemon=True).start()

    def _deliver(self, take: _Take, source_lost: bool = False) -> None:
        audio = np.concatenate(take.chunks) if take.chunks else np.zeros(0, np.float32)
        speech = True
        if take.detector is not None and self.options.skip_silence:
            try:
                speech = take.detector.finish()
            except Exception:  # a broken silence check must not lose the dictation
                log.exception("speech check failed; transcribing anyway")
        if take.paused_at is not None and take.detector is not None and take.detector.speech_end == take.paused_end:
            audio = audio[:take.paused_at]  # nothing said since the pause: exactly the samples transcribed early
        elif take.silence_said and take.detector is not None:  # ended by the silence: drop all but the post-roll
            audio = audio[:take.detector.speech_end + self.options.post_roll_ms * SAMPLE_RATE // 1000]
        post_roll_ms = 0.0 if take.post_roll_from is None else (take.length - take.post_roll_from) / SAMPLE_RATE * 1000
        log.info("recording %d finished: %.2f s, speech=%s, post-roll %.0f ms", take.rec_id, len(audio) / SAMPLE_RATE,
                 speech, post_roll_ms)
        self.on_finished(RecordingResult(take.rec_id, audio, speech=speech, hit_limit=take.hit_limit,
                                         source_lost=source_lost))
