"""The history's part of the running app: the database, its window, "Paste again", and each dictation's entry.

`AppUi` (wiring.py) hands this class what concerns the history: each transcript when it arrives
(stored before the paste, so a failed paste loses nothing), each paste's outcome (pastes finish in
the order the transcripts arrived), the recordings the user asked to keep, and the retention
settings, which delete transcripts and therefore ask first when they would.
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
from collections import deque
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QApplication, QMessageBox, QWidget

from app.config import Settings
from app.desktop.paste import PasteOptions, Paster
from app.history import History

if TYPE_CHECKING:  # imported when first opened: it costs start-up time otherwise
    from app.ui.history_window import HistoryWindow

log = logging.getLogger(__name__)


PASTE_FIELDS = {"paste_method", "paste_keys", "restore_clipboard", "space_between"}


def paste_options(s: Settings) -> PasteOptions:
    return PasteOptions(s.paste_method, s.paste_keys, s.restore_clipboard, s.space_between)


class HistoryUi(QObject):
    """The history database (None while the history is off), its window, and the "Paste again" paster.
    "Transcribe again" in the window is passed on as `transcribe_requested(entry_id)`."""

    transcribe_requested = Signal(int)

    def __init__(self, dictation, settings: Settings, *, repaster: Paster | None = None,
                 parent: QObject | None = None) -> None:
        """`repaster` replaces the real "Paste again" paster (tests)."""
        super().__init__(parent)
        self.app = dictation
        self.history: History | None = None
        self.window: HistoryWindow | None = None
        self._settings = settings
        self._repaster = repaster
        self._repasting: deque[int] = deque()  # history ids of "Paste again" requests, oldest first
        if repaster is not None:
            repaster.finished.connect(self._repasted)
        self._awaiting_paste: deque[int | None] = deque()  # history ids, in the order their pastes finish
        self._audio: dict[str, object] = {}  # job id -> recording, kept for the history when the user asked
        self._open(settings)

    # ---- settings ------------------------------------------------------------------------------
    def apply(self, s: Settings, names: set[str]) -> None:
        """Follow a settings change (`names` the fields that changed): open or close the history, prune it
        to a new retention, and paste again the way pastes go now."""
        self._settings = s
        if self._repaster is not None and names & PASTE_FIELDS:
            self._repaster.options = paste_options(s)
        if names & {"history", "history_days", "history_max"}:
            self._open(s)

    def _open(self, s: Settings) -> None:
        if s.history and self.history is None:
            try:  # a damaged file is set aside and salvaged, now or when a later query meets the damage
                self.history = History(on_repair=lambda sentence: self.app.notify(sentence, error=True))
            except Exception as exc:  # sqlite3.Error or OSError: dictation must go on without it
                self.app.notify(f"The history could not be opened ({exc}); transcripts are not kept this time.",
                                error=True)
                return
        elif not s.history and self.history is not None:
            if self.window is not None:
                self.window.close()
                self.window = None
            self.history.close()
            self.history = None
        if self.history is not None:
            self.history.prune(max_days=s.history_days, max_entries=s.history_max)

    def confirm_retention(self, name: str, value: object, parent: QWidget | None) -> bool:
        """A shorter retention deletes transcripts the moment it applies, and they cannot be brought back:
        typing 10 into "Keep at most" (meaning 100) would delete all but ten. Ask first, saying how many."""
        if name not in ("history_days", "history_max") or self.history is None or not isinstance(value, int):
            return True
        new = dataclasses.replace(self._settings, **{name: value})
        try:
            doomed = self.history.would_prune(max_days=new.history_days, max_entries=new.history_max)
        except sqlite3.Error:
            return True  # the change itself then reports the history's problem
        if not doomed:
            return True
        what = "transcript" if doomed == 1 else f"{doomed} transcripts"
        rule = (f"Keeping at most {value} transcripts" if name == "history_max"
                else f"Keeping transcripts for {value} days")
        box = QMessageBox(QMessageBox.Icon.Warning, "Delete transcripts?",
                          f"{rule} deletes the oldest {what} now, and they cannot be brought back.",
                          QMessageBox.StandardButton.Cancel, parent)
        delete = box.addButton(f"Delete {what}", QMessageBox.ButtonRole.DestructiveRole)
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)
        box.exec()
        return box.clickedButton() is delete

    # ---- each dictation ------------------------------------------------------------------------
    def remember_audio(self, job_id: str, audio) -> None:
        """The app hands over each recording it submits; the history keeps it with the transcript when
        "Keep recordings" is on (off by default)."""
        if self._settings.history and self._settings.history_audio:
            self._audio[job_id] = audio

    def forget(self, job_id: str) -> None:
        """The job failed (KeptRecordings keeps its recording) or was a kept recording's: no entry of its own."""
        self._audio.pop(job_id, None)

    def add(self, job_id: str, text: str, transcript: dict, target: str) -> None:
        """Store a transcript as it arrives, before its paste; an empty one is not pasted and not kept."""
        audio = self._audio.pop(job_id, None)
        if not text:
            return
        entry_id = None
        if self.history is not None:
            s = self._settings
            try:
                entry_id = self.history.add(text, language=str(transcript.get("language", "")),
                                            engine=s.engine, model=s.engine_spec().model,
                                            steps=transcript.get("steps_used"), timings=transcript.get("timings") or {},
                                            target=target, audio=audio,
                                            raw_text=str(transcript.get("raw_text", text)).strip())
            except sqlite3.Error as exc:
                self._write_failed(exc)
            else:
                self._keep_retention()
            self.refresh_window()
        self._awaiting_paste.append(entry_id)  # one per paste, kept or not: each paste's outcome finds its entry

    def _keep_retention(self) -> None:
        """Apply "Keep for (days)" and "Keep at most" at each new transcript, not only at start-up: a tray app
        runs for weeks, and a user who chose to keep transcripts for one day (or the last ten) must not find a
        month of them (and their recordings) still on disk because the app was never restarted."""
        s = self._settings
        try:
            self.history.prune(max_days=s.history_days, max_entries=s.history_max)
        except sqlite3.Error as exc:
            self._write_failed(exc)

    def pasted(self, ok: bool, message: str, outcome: str) -> None:
        """The paste of the oldest transcript still waiting finished: its entry says how."""
        entry_id = self._awaiting_paste.popleft() if self._awaiting_paste else None
        if entry_id is not None and self.history is not None:
            try:
                self.history.set_paste_result(entry_id, ok, message, outcome)
            except sqlite3.Error as exc:
                self._write_failed(exc)
            self.refresh_window()

    # ---- the window and "Paste again" ----------------------------------------------------------
    def show(self) -> None:
        if self.history is None:
            self.app.notify("The history is off: turn on Keep history in Settings to keep your transcripts.")
            return
        if self.window is None:
            from app.ui.history_window import HistoryWindow

            self.window = HistoryWindow(self.history)
            self.window.repaste_requested.connect(self.repaste)
            self.window.transcribe_requested.connect(self.transcribe_requested)
        self.window.present()

    def repaste(self, entry_id: int, text: str) -> None:
        """Hide the history window, wait for the user's window to get the focus back, then paste there."""
        if self.window is not None:
            self.window.hide()
        if self._repaster is None:
            self._repaster = Paster(paste_options(self._settings), parent=self)
            self._repaster.finished.connect(self._repasted)
        waited = [0]

        def paste_when_unfocused() -> None:
            active = QApplication.activeWindow()
            if active is None or not active.isVisible():  # the user's window has the focus again
                self._repasting.append(entry_id)
                self._repaster.paste(text)
                return
            waited[0] += 1
            if waited[0] < 40:  # up to 2 s for the window manager
                QTimer.singleShot(50, paste_when_unfocused)
                return
            # Another of our windows (settings) kept the focus: pasting would type into it.
            QGuiApplication.clipboard().setText(text)
            self.app.notify("The transcript is on the clipboard: click into the window you want it in and paste it.")

        QTimer.singleShot(50, paste_when_unfocused)

    def _repasted(self, ok: bool, message: str) -> None:
        entry_id = self._repasting.popleft() if self._repasting else None
        if entry_id is not None and self.history is not None:
            self.history.set_paste_result(entry_id, ok, message, self._repaster.outcome)
        if not ok:
            self.app.notify(message, error=True)

    def refresh_window(self) -> None:
        if self.window is not None and self.window.isVisible():
            self.window.refresh()

    def _write_failed(self, exc: sqlite3.Error) -> None:
        """The history file is locked (another program has it open) or the disk is full: the dictation goes
        on; the user learns why the history misses it instead of an error nobody sees."""
        self.app.notify(f"The history could not be updated ({exc}); close any other program that has "
                        f"{self.history.path} open. The text itself was not affected.", error=True)

    def close(self) -> list[QWidget]:
        """At app exit: close the database; returns the window, for the caller to delete with the others."""
        window, self.window = self.window, None
        if self.history is not None:
            self.history.close()
            self.history = None
        return [window] if window is not None else []
