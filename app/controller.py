"""The one state machine every dictation event goes through.

Hotkey presses and releases, the cancel key, the command-line `toggle/start/stop/cancel`, the
recorder's finished recordings, the worker's results and failures and the paster's outcome all
arrive here, on one thread (the Qt main thread in the app, the test thread in tests). The
controller holds no Qt object and does no I/O: it decides, and asks its `Effects` to act. That keeps
every rule (modes, queueing, cancel) testable with a fake clock and a list of recorded effects.

The user sees one state: Idle -> Recording -> Transcribing -> Pasting -> Idle, plus Error. Inside,
a recording can start while earlier dictations are still transcribing or pasting: they wait in a
queue and are pasted in the order they were spoken, so nothing is dropped. The visible state is
derived: Recording wins, then Pasting, then Transcribing, then Error, else Idle.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Callable, Protocol

import numpy as np

from app.errors import UserError

MODES = ("hold", "toggle", "hybrid")


class State(str, Enum):
    IDLE = "idle"
    RECORDING = "recording"
    TRANSCRIBING = "transcribing"
    PASTING = "pasting"
    ERROR = "error"


@dataclass
class RecordingResult:
    """A finished recording as the recorder hands it over (post-roll included)."""

    rec_id: int
    audio: np.ndarray
    speech: bool = True  # False when the silence check found no speech
    hit_limit: bool = False  # stopped by the maximum length, not by the user
    source_lost: bool = False  # cut short: the microphone stopped sending sound (unplugged, failing)


class Effects(Protocol):
    """What the controller can make happen; the app wires these to the real recorder, worker, paster."""

    def start_recording(self) -> int:
        """Begin capturing (pre-roll included); return the recording's id or raise UserError."""

    def stop_recording(self, rec_id: int, released_at: float) -> None:
        """Finish after the post-roll counted from `released_at`; the result comes via `recording_finished`."""

    def discard_recording(self, rec_id: int) -> None: ...

    def transcribe(self, audio: np.ndarray) -> str:
        """Send audio to the worker; return the job id. The result comes via `transcribed`."""

    def cancel_transcription(self, job_id: str) -> None: ...

    def paste(self, text: str, language: str = "") -> None:
        """Insert text (in `language`) into the focused window; the outcome comes via `paste_finished`."""

    def state_changed(self, state: State) -> None: ...

    def notify(self, message: str, error: bool = False) -> None: ...


@dataclass
class _Dictation:
    """One stopped recording on its way to the target window."""

    rec_id: int
    job_id: str | None = None  # set once the audio went to the worker
    text: str | None = None  # set once transcribed
    language: str = ""  # the transcript's language (how a text in a row is joined to the one before it)


class Controller:
    """Turns events into effects. All methods must be called from one thread."""

    def __init__(self, effects: Effects, *, mode: str = "hybrid", tap_s: float = 0.4,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.fx = effects
        self.mode = mode
        self.tap_s = tap_s
        self.clock = clock
        self._recording: int | None = None  # the recording the user is speaking into
        self._started_at = 0.0
        self._press_started = False  # the current hotkey press began the recording (hold/hybrid)
        self._key_down = False  # the hotkey is held: a paste now would send its keys into the held hotkey
        self._grabbed = False  # X11: the keyboard is still ours (a key of the hotkey is down after its release)
        self._queue: deque[_Dictation] = deque()  # stopped, in the order spoken
        self._pasting = False
        self._error: str | None = None
        self._shown = State.IDLE

    def configure(self, *, mode: str, tap_s: float) -> None:
        if mode not in MODES:
            raise UserError(f"Unknown trigger mode '{mode}'; choose one of {', '.join(MODES)}.", code="bad_mode")
        self.mode, self.tap_s = mode, tap_s

    # ---- what the user sees -------------------------------------------------------------------
    @property
    def state(self) -> State:
        if self._recording is not None:
            return State.RECORDING
        if self._pasting:
            return State.PASTING
        if self._queue:
            return State.TRANSCRIBING
        return State.ERROR if self._error else State.IDLE

    @property
    def recording_id(self) -> int | None:
        """The recorder's id of the dictation being recorded now (None: none is)."""
        return self._recording

    @property
    def queued(self) -> int:
        """Dictations stopped but not yet pasted."""
        return len(self._queue)

    def _update(self) -> None:
        state = self.state
        if state != self._shown:
            self._shown = state
            self.fx.state_changed(state)

    # ---- input: hotkey, cancel key, commands --------------------------------------------------
    def hotkey_pressed(self, at: float | None = None) -> None:
        at = self.clock() if at is None else at
        self._key_down = True
        if self._recording is None:
            self._press_started = self._start(at)
        elif self.mode == "toggle" or not self._press_started:
            self._stop(at)  # second tap of a toggle, or a press ending a command-line start

    def hotkey_released(self, at: float | None = None) -> None:
        """`at` is when the key really went up (before the auto-repeat grace period)."""
        at = self.clock() if at is None else at
        self._key_down = False
        if self._press_started:
            self._press_started = False
            if self.mode == "hold" or (self.mode == "hybrid" and at - self._started_at >= self.tap_s):
                self._stop(at)
        self._paste_next()  # a transcript that waited for the key to come up
        self._update()

    def keyboard_grabbed(self, grabbed: bool) -> None:
        """X11: the hotkey's grab holds the keyboard (True) or gave it back (False). The grab lasts until
        the grabbed key is up, so it can outlive the release: Ctrl let go first ends the dictation, but
        a paste sent while Space is still down would come to us, and the text would be typed 2.5 s later."""
        self._grabbed = grabbed
        if not grabbed:
            self._paste_next()
            self._update()

    def cancel_key(self) -> None:
        """Esc: only meaningful while recording; elsewhere the key belongs to the focused app."""
        if self._recording is not None:
            self.cancel()

    def speech_paused(self, rec_id: int) -> None:
        """The recorder heard the speaker silent for the hands-free stop's time (`auto_stop_s`): end the
        recording, unless the hotkey is held (hold-to-talk ends at the release, however long the pause)."""
        if rec_id == self._recording and not self._key_down:
            self._stop(self.clock())

    def command(self, name: str) -> None:
        """The remote commands (`python -m app toggle` and friends)."""
        now = self.clock()
        if name == "toggle":
            self._stop(now) if self._recording is not None else self._start(now)
        elif name == "start" and self._recording is None:
            self._start(now)
        elif name == "stop" and self._recording is not None:
            self._stop(now)
        elif name == "cancel":
            self.cancel()
        self._press_started = False

    def cancel(self) -> None:
        """Discard the recording in progress; when none is, drop the dictations not yet pasted."""
        self._press_started = False
        if self._recording is not None:
            self.fx.discard_recording(self._recording)
            self._recording = None
            self.fx.notify("Dictation cancelled.")
        elif self._queue:
            keep = deque([self._queue[0]]) if self._pasting else deque()  # a paste under way cannot be undone
            for d in list(self._queue)[len(keep):]:
                if d.job_id is not None and d.text is None:
                    self.fx.cancel_transcription(d.job_id)
                elif d.job_id is None:
                    self.fx.discard_recording(d.rec_id)
            self._queue = keep
            self.fx.notify("Dictation cancelled.")
        self._update()

    def _start(self, at: float) -> bool:
        try:
            self._recording = self.fx.start_recording()
        except UserError as exc:
            self._fail(str(exc))
            return False
        self._started_at, self._error = at, None
        self._update()
        return True

    def _stop(self, at: float) -> None:
        self._queue.append(_Dictation(self._recording))
        self.fx.stop_recording(self._recording, at)
        self._recording = None
        self._press_started = False
        self._update()

    # ---- results coming back -----------------------------------------------------------------
    def recording_finished(self, result: RecordingResult) -> None:
        if result.rec_id == self._recording:  # stopped by the recorder while the user was speaking
            self._queue.append(_Dictation(result.rec_id))
            self._recording, self._press_started = None, False
            if not result.source_lost:
                self.fx.notify("The recording reached its maximum length and was stopped, so only what you said until "
                               "then is transcribed; raise Settings → Audio → Longest recording for longer dictations.")
        if result.source_lost:
            self._fail("The microphone stopped sending sound (unplugged or failing), so the recording was stopped "
                       "there. Plug it back in or choose another microphone in the settings, then dictate again.")
        entry = self._find(rec_id=result.rec_id)
        if entry is None:
            return  # cancelled meanwhile
        if not result.speech:
            self._queue.remove(entry)
            self.fx.notify("No speech was heard, so nothing was typed.")
        else:
            entry.job_id = self.fx.transcribe(result.audio)
        self._update()

    def transcribed(self, job_id: str, text: str, language: str = "") -> None:
        entry = self._find(job_id=job_id)
        if entry is None:
            return
        entry.language = language
        entry.text = text.strip(" \t")  # a line break at either end is a layout command's ("new paragraph")
        if not entry.text:
            self._queue.remove(entry)
            self.fx.notify("No words were recognised, so nothing was typed.")
        self._paste_next()
        self._update()

    def transcription_failed(self, job_id: str, message: str) -> None:
        """A job failed (`job_id` set) or the worker as a whole did ("")."""
        if job_id:
            entry = self._find(job_id=job_id)
            if entry is None:
                return  # a job cancelled meanwhile
            self._queue.remove(entry)
        self._fail(message)
        self._paste_next()
        self._update()

    def paste_finished(self, ok: bool, message: str = "") -> None:
        if self._pasting:
            self._pasting = False
            self._queue.popleft()
        if not ok:
            self._fail(message)
        self._paste_next()
        self._update()

    def _paste_next(self) -> None:
        """Paste the oldest dictation once transcribed, but never while the hotkey is held or its grab holds
        the keyboard: on X11 the paste keystroke would come to us instead of the target (and its lifted
        modifiers would end the recording the user is speaking into)."""
        if self._key_down or self._grabbed:
            return
        if not self._pasting and self._queue and self._queue[0].text is not None:
            self._pasting = True
            self.fx.paste(self._queue[0].text, self._queue[0].language)

    def clear_error(self) -> None:
        """What failed is fixed (the model loads now): leave the error state without a dictation."""
        self._error = None
        self._update()

    def _fail(self, message: str) -> None:
        self._error = message
        self.fx.notify(message, error=True)
        self._update()

    def _find(self, *, rec_id: int | None = None, job_id: str | None = None) -> _Dictation | None:
        for d in self._queue:
            if (rec_id is not None and d.rec_id == rec_id) or (job_id is not None and d.job_id == job_id):
                return d
        return None
