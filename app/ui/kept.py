"""Recordings the speech model could not transcribe: kept, and transcribed once the model works.

A first start offline with the default Hub model, or a model folder that is gone, used to cost the
user their words: recording worked, the job failed, the audio was dropped. With "When the model
cannot run: keep" (the default) a recording whose job fails while the worker is in its failed state
is stored in the history as not transcribed, with its audio, and submitted again as soon as the
worker is ready: later in this session (the model fixed in Settings) or at a later start. The
transcript then fills in its history entry. It is not pasted: the window it was meant for has long
moved on; a notice says where it is. With the history off the recording is kept in memory only.
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np
from PySide6.QtCore import QObject

from app.history import NOT_TRANSCRIBED, TRANSCRIBED_LATER, History, wav_samples

log = logging.getLogger(__name__)


class KeptRecordings(QObject):
    """Follows every job of `dictation` (the DictationApp). AppUi hands it each job's end (`result`, `failed`)
    before anything else sees it: `owns(job_id)` tells a retry, which nothing else must take for a dictation."""

    def __init__(self, dictation, history: Callable[[], History | None], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.app = dictation
        self._history = history
        self._audio: dict[str, np.ndarray] = {}  # job id -> its audio, until the job ends
        self._retrying: dict[str, int | None] = {}  # job id -> the history entry it fills in (None: history off)
        self._waiting: list[tuple[int | None, np.ndarray | None]] = []  # (entry, audio) not yet sent again
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
        if job_id in self._retrying:  # still no model that works: wait for the next ready
            self._waiting.append((self._retrying.pop(job_id), audio))
            return
        if audio is None or code == "cancelled" or self.app.worker.state != "failed":
            return
        if self.app.settings.unusable_model != "keep":
            return
        history = self._history()
        entry = None
        if history is not None:
            entry = history.add("", language=self.app.settings.language, engine=self.app.settings.engine,
                                model=self.app.settings.engine_spec().model, audio=audio, outcome=NOT_TRANSCRIBED)
        self._waiting.append((entry, audio))
        where = "in History" if history is not None else "until the app quits"
        self.app.notify(f"Your recording is kept {where} and will be transcribed as soon as the speech model works.")

    def _worker_state(self, state: str) -> None:
        if state != "ready" or not self._waiting:
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
        entry = self._retrying.pop(job_id)
        text = str(transcript.get("text", "")).strip()
        history = self._history()
        if history is not None and entry is not None:
            history.set_transcript(entry, text, TRANSCRIBED_LATER, str(transcript.get("raw_text", text)).strip())
        if not text:
            self.app.notify("A recording kept while the model could not run held no words.")
            return
        short = text if len(text) <= 60 else text[:57] + "…"
        where = "It is in History, ready to copy or paste." if entry is not None else ""
        self.app.notify(f"A recording kept while the model could not run is transcribed: “{short}”. {where}".strip())
