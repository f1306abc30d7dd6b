"""Recordings that were not transcribed: kept, and transcribed once the model can do it.

A recording is the user's words; a transcription that fails must not cost them. Every job that
fails for a reason other than the user's own cancel or audio with nothing in it is kept: in the
history as not transcribed, with its audio (with the history off, in memory until the app quits).
Three ways lead there:
- the model cannot run (a first start offline, a model folder that is gone): with "When the model
  cannot run: keep" (the default) recordings go on being made and wait here;
- the model runs but this job failed (out of GPU memory in a fixed quantization, a speech server
  that refuses the upload, an engine bug);
- the app quits while the job is still under way (`keep_unfinished`; a switch between the local worker
  and a speech server loses nothing: the old client finishes its jobs first).

Kept recordings are sent again each time a model becomes ready after a load (a fixed model, a
changed setting, the next start), not when a working model merely finishes a job: a job that fails
on a working model would fail again at once. "Transcribe again" in the History window sends one
entry right away (`transcribe_again`), also one that was transcribed before (another language).
The transcript then fills in its history entry. It is not pasted: the window it was meant for has
long moved on; a notice says where it is.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Callable

import numpy as np
from PySide6.QtCore import QObject, Signal

from app.history import NOT_TRANSCRIBED, TRANSCRIBED_LATER, History, wav_samples

log = logging.getLogger(__name__)

# Failures that lose no words: the user's own cancel, and audio with nothing in it to transcribe.
_NOTHING_TO_KEEP = {"cancelled", "bad_audio", "empty_audio"}
_MODEL_WORKS = ("ready", "busy")


class KeptRecordings(QObject):
    """Follows every job of `dictation` (the DictationApp). AppUi hands it each job's end (`result`, `failed`)
    before anything else sees it: `owns(job_id)` tells a retry, which nothing else must take for a dictation."""

    entry_changed = Signal(int)  # a history entry was added or filled in (the History window refreshes)

    def __init__(self, dictation, history: Callable[[], History | None], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.app = dictation
        self._history = history
        self._audio: dict[str, np.ndarray] = {}  # job id -> its audio, until the job ends
        self._retrying: dict[str, int | None] = {}  # job id -> the history entry it fills in (None: history off)
        self._asked: set[str] = set()  # retries the user asked for in the History window: their failures are told
        self._waiting: list[tuple[int | None, np.ndarray | None]] = []  # (entry, audio) not yet sent again
        self._state = dictation.worker.state
        dictation.submitted.connect(self._submitted)
        dictation.worker.state_changed.connect(self._worker_state)
        history_now = history()
        if history_now is not None:  # kept at an earlier start
            self._waiting += [(entry, None) for entry in history_now.untranscribed()]

    def owns(self, job_id: str) -> bool:
        return job_id in self._retrying

    @property
    def waiting(self) -> int:
        """Recordings kept and not transcribed yet."""
        return len(self._waiting) + len(self._retrying)

    def _submitted(self, job_id: str, audio) -> None:
        self._audio[job_id] = audio

    def failed(self, job_id: str, code: str, message: str) -> None:
        audio = self._audio.pop(job_id, None)
        if job_id in self._retrying:  # not this time either: wait for the next model load
            entry = self._retrying.pop(job_id)
            self._waiting.append((entry, None if entry is not None else audio))  # the history holds it
            if job_id in self._asked:
                self._asked.discard(job_id)
                self.app.notify(f"Transcribing the kept recording again failed: {message}", error=True)
            return
        if audio is None or code in _NOTHING_TO_KEEP:
            return
        entry = self._keep(audio)
        where = "in History" if entry is not None else "until the app quits"
        if self.app.worker.state == "failed":
            self.app.notify(f"Your recording is kept {where} and will be transcribed as soon as the speech model works.")
        elif code != "stopped":
            how = "select it there and choose Transcribe again" if entry is not None else "it is sent again"
            self.app.notify(f"Your recording was not transcribed and is kept {where}: {how} once the problem is "
                            "fixed (it is also sent again when the model next loads).")

    def keep_unfinished(self) -> int:
        """At app exit: keep the recordings whose jobs are still under way; the next start transcribes them.
        Returns how many were kept."""
        unfinished = [audio for job_id, audio in self._audio.items() if job_id not in self._retrying]
        self._audio.clear()
        for audio in unfinished:
            self._keep(audio)
        if unfinished:
            log.info("kept recordings: %d still being transcribed at exit, kept for the next start", len(unfinished))
        return len(unfinished)

    def _keep(self, audio: np.ndarray) -> int | None:
        """Store the recording as not transcribed (history off: in memory); returns its history entry."""
        history = self._history()
        entry = None
        if history is not None:
            s = self.app.settings
            try:
                entry = history.add("", language=s.language, engine=s.engine, model=s.engine_spec().model,
                                    audio=audio, outcome=NOT_TRANSCRIBED)
            except sqlite3.Error as exc:  # a full disk, a locked file: kept in memory instead
                log.warning("kept recordings: the history could not be written (%s)", exc)
            else:
                self.entry_changed.emit(entry)
        self._waiting.append((entry, None if entry is not None else audio))
        return entry

    def transcribe_again(self, entry_id: int) -> bool:
        """Send a history entry's recording to the model now ("Transcribe again"); False: it has no recording."""
        if entry_id in self._retrying.values():
            return True  # already on its way (a second click, or the re-send after a load): once is enough
        history = self._history()
        data = history.audio(entry_id) if history is not None else None
        if data is None:
            return False
        self._waiting = [(entry, audio) for entry, audio in self._waiting if entry != entry_id]
        job_id = self.app.transcribe(wav_samples(data))
        self._retrying[job_id] = entry_id
        self._asked.add(job_id)
        return True

    def _worker_state(self, state: str) -> None:
        # A model (re)loaded, not a job finished: `busy` too, when a dictation was waiting for the load.
        loaded = state in _MODEL_WORKS and self._state not in _MODEL_WORKS
        self._state = state
        if not loaded or not self._waiting:
            return
        history = self._history()
        waiting, self._waiting = self._waiting, []
        for entry, audio in waiting:
            if audio is None:
                data = history.audio(entry) if history is not None else None
                if data is None:
                    continue  # deleted from the history meanwhile
                audio = wav_samples(data)
            self._retrying[self.app.transcribe(audio)] = entry
        log.info("kept recordings: %d sent to the speech model again", len(waiting))

    def result(self, job_id: str, transcript: dict) -> None:
        self._audio.pop(job_id, None)
        if job_id not in self._retrying:
            return
        self._asked.discard(job_id)
        entry = self._retrying.pop(job_id)
        text = str(transcript.get("text", "")).strip()
        history = self._history()
        if history is not None and entry is not None:
            history.set_transcript(entry, text, TRANSCRIBED_LATER, str(transcript.get("raw_text", text)).strip())
            self.entry_changed.emit(entry)
        if not text:
            self.app.notify("A kept recording, transcribed now, held no words.")
            return
        short = text if len(text) <= 60 else text[:57] + "…"
        where = "It is in History, ready to copy or paste." if entry is not None else ""
        self.app.notify(f"A kept recording is transcribed: “{short}”. {where}".strip())
