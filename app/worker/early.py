"""Transcribing ahead: the worker's side of "the text is ready the moment you let go".

While the user holds the hotkey and pauses, the app sends what was said so far as a `speculate`
frame. The worker transcribes it between dictations, silently (no progress, no result), and keeps
the transcript of the latest one. If the user then lets go without saying more, the recorder hands
over exactly those samples, and the `transcribe` frame that follows is answered from the kept
transcript at once: the engine's whole time has passed while the user was still holding the key.

Which transcript may answer which job is decided here and nowhere else: the same audio bytes and
the same language, steps and vocabulary, so an early answer is always the answer the job would have
got (engines are deterministic for the same input), from the engine loaded now: a transcript made
before another model was loaded answers nothing. Everything else is given up early: a newer
speculation replaces an older one, a dictation that waits goes first, and a running speculation a
job does not match is cancelled at its next step. Thread-safe: the reader thread offers frames, the
main thread runs and takes them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from app.engine import Transcript
from app.worker.protocol import Frame


def same_request(a: Frame, b: Frame) -> bool:
    """Would `a` and `b` get the same transcript? The same samples and the same options."""
    return (a.payload == b.payload and a.get("language") == b.get("language") and a.get("steps") == b.get("steps")
            and list(a.get("vocabulary") or ()) == list(b.get("vocabulary") or ()))


@dataclass
class Early:
    """A finished speculation: its frame (audio and options), its transcript and its engine time."""

    frame: Frame
    transcript: Transcript
    ms: float


class Speculations:
    """The latest `speculate` frame, the one running, and the finished one a job may take."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: Frame | None = None  # the newest offered; older ones are stale
        self._running: Frame | None = None
        self._done: Early | None = None

    def offer(self, frame: Frame) -> str | None:
        """Reader thread: a new speculation. Returns the id of a running one it replaces (to cancel)."""
        with self._lock:
            self._latest, self._done = frame, None  # the older transcript cannot match what is recorded now
            running = self._running
        return running["id"] if running is not None and not same_request(running, frame) else None

    def job_arrived(self, job: Frame) -> str | None:
        """Reader thread: a `transcribe` frame. Returns the id of a running speculation it cannot use (to cancel)."""
        with self._lock:
            running = self._running
            if self._latest is not None and not same_request(self._latest, job):
                self._latest = None  # the dictation it was made for ended otherwise: never start it
            if self._done is not None and not same_request(self._done.frame, job):
                self._done = None  # likewise: its audio (up to minutes of it) need not be held any longer
        return running["id"] if running is not None and not same_request(running, job) else None

    def start(self, frame: Frame) -> bool:
        """Main thread: run `frame` now? Only the latest speculation, and only while no dictation waits
        (the caller checks that); True marks it running."""
        with self._lock:
            if self._latest is not frame:
                return False
            self._running = frame
            return True

    def finish(self, frame: Frame, transcript: Transcript | None, ms: float = 0.0) -> None:
        """Main thread: the speculation ended, with its transcript (None: cancelled or failed)."""
        with self._lock:
            self._running = None
            if transcript is not None and self._latest is frame:
                self._done = Early(frame, transcript, ms)

    def engine_changed(self) -> None:
        """Main thread: another model (or quantization) runs from now on. A finished transcript is the old
        engine's and would answer a job with a text the job itself no longer gets; a speculation still to
        run runs on the new engine, so it stays."""
        with self._lock:
            self._done = None

    def take(self, job: Frame) -> Early | None:
        """Main thread, before running `job`: the finished speculation of the same request, used once."""
        with self._lock:
            done = self._done
            if done is None or not same_request(done.frame, job):
                return None
            self._done = None
            if self._latest is done.frame:
                self._latest = None
            return done
