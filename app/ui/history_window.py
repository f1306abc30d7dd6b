"""The history window: find an earlier transcript, copy it, or paste it again.

Its main job is rescue: a dictation whose paste failed (the target window closed, a terminal
ignored the keystroke) is marked, and "Failed only" finds it at once. "Paste again" does not
paste here: it asks the app (`repaste_requested`) to hide this window and paste into the window
that gets the focus back, the same way a dictation is pasted. A recording that was not transcribed
(the model could not run, the job failed) is here too, with its audio: "Transcribe again" asks the
app (`transcribe_requested`) to send it to the model, and "Save recording…" writes it as a WAV file.
"""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QColor, QGuiApplication, QKeySequence, QShortcut
from PySide6.QtWidgets import (QCheckBox, QFileDialog, QHBoxLayout, QHeaderView, QLabel, QLineEdit, QMessageBox,
                               QPlainTextEdit, QPushButton, QSplitter, QTreeWidget, QTreeWidgetItem, QVBoxLayout,
                               QWidget)

from app.engine.base import LANGUAGES
from app.history import Dictation, History
from app.latency import format_seconds
from app.ui.style import apply_style
from app.ui.tray import APP_TITLE

_ID = Qt.ItemDataRole.UserRole
_SHOWN = 500  # the newest this many are listed (a search reaches every transcript)
_FAILED = QColor("#c62828")


def when(created: float, now: float | None = None) -> str:
    """"14:32" today, "Yesterday 09:10", "Mon 12 May 18:03" before that."""
    now = time.time() if now is None else now
    t, today = time.localtime(created), time.localtime(now)
    clock = time.strftime("%H:%M", t)
    days = (time.mktime(today[:3] + (0, 0, 0, 0, 0, -1)) - time.mktime(t[:3] + (0, 0, 0, 0, 0, -1))) / 86400
    if round(days) == 0:
        return clock
    if round(days) == 1:
        return f"Yesterday {clock}"
    return time.strftime("%a %d %b %H:%M" if t.tm_year == today.tm_year else "%d %b %Y %H:%M", t)


_OUTCOME_LABELS = {"pasted": "Pasted", "typed": "Typed", "clipboard": "On clipboard", "failed": "Paste failed",
                   "not_transcribed": "Not transcribed", "transcribed_later": "Transcribed later"}


def paste_status(entry: Dictation) -> str:
    if entry.outcome in _OUTCOME_LABELS:
        return _OUTCOME_LABELS[entry.outcome]
    if entry.paste_ok is None:
        return ""
    return "Pasted" if entry.paste_ok else "Paste failed"


def details(entry: Dictation) -> str:
    """One line about a dictation: when, language, steps, how long it took, where it went and how."""
    parts = [time.strftime("%A %d %B %Y, %H:%M:%S", time.localtime(entry.created))]
    if entry.language:
        parts.append(LANGUAGES.get(entry.language, entry.language))
    if entry.steps:
        parts.append(f"{entry.steps} steps" if entry.engine == "diffusion" else f"{entry.steps} tokens")
    total = entry.timings.get("total") if isinstance(entry.timings, dict) else None
    if isinstance(total, (int, float)):
        parts.append(f"transcribed in {format_seconds(total)}")
    if entry.target:
        parts.append(f"into {entry.target}")
    status = paste_status(entry)
    if status:
        parts.append(status.lower())
    line = " · ".join(parts)
    if entry.raw_text and entry.raw_text != entry.text:  # changed by vocabulary, replacements, fillers, punctuation
        line += f"\nAs heard: {entry.raw_text}"
    return line


class HistoryWindow(QWidget):
    """Lists `history`; emits `repaste_requested(entry_id, text)` for "Paste again" and
    `transcribe_requested(entry_id)` for "Transcribe again" (an entry with its recording)."""

    repaste_requested = Signal(int, str)
    transcribe_requested = Signal(int)

    def __init__(self, history: History, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.history = history
        self.setWindowTitle(f"{APP_TITLE} history")
        apply_style(self)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search transcripts")
        self.search.setClearButtonEnabled(True)
        self.search.setAccessibleName("Search transcripts")
        self.failed_only = QCheckBox("Failed only")
        self.failed_only.setToolTip("Show only transcripts whose paste failed and recordings not transcribed.")
        self.count = QLabel()
        self.count.setObjectName("hint")
        self.list = QTreeWidget()
        self.list.setHeaderLabels(["When", "Transcript", "Paste"])
        self.list.setRootIsDecorated(False)
        self.list.setUniformRowHeights(True)
        self.list.setAlternatingRowColors(True)
        self.list.setAccessibleName("Transcripts")
        self.list.setObjectName("transcripts")
        header = self.list.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        self.text.setAccessibleName("Transcript")
        self.text.setObjectName("transcript")
        self.meta = QLabel()
        self.meta.setObjectName("hint")
        self.meta.setWordWrap(True)
        self.meta.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.failed = QLabel()
        self.failed.setObjectName("failed")
        self.failed.setWordWrap(True)
        self.failed.hide()
        self.copy_button = QPushButton("Copy")
        self.copy_button.setToolTip("Copy the transcript to the clipboard (Ctrl+C in the list).")
        self.paste_button = QPushButton("Paste again")
        self.paste_button.setDefault(True)
        self.paste_button.setToolTip("Paste it into the window you were in before this one (Ctrl+Enter).")
        self.transcribe_button = QPushButton("Transcribe again")
        self.transcribe_button.setToolTip("Send the kept recording to the speech model again, with the language now "
                                          "set; the new transcript replaces this one.")
        self.save_button = QPushButton("Save recording…")
        self.save_button.setToolTip("Save the kept recording as a WAV file.")
        self.delete_button = QPushButton("Delete")
        self.delete_button.setToolTip("Delete this transcript (and its recording, if kept).")
        self.clear_button = QPushButton("Clear history…")
        self.clear_button.setObjectName("flat")
        self.notice = QLabel()
        self.notice.setObjectName("hint")

        top = QHBoxLayout()
        top.addWidget(self.search, 1)
        top.addWidget(self.failed_only)
        detail = QWidget()
        detail_layout = QVBoxLayout(detail)
        detail_layout.setContentsMargins(0, 0, 0, 0)
        detail_layout.addWidget(self.meta)
        detail_layout.addWidget(self.failed)
        detail_layout.addWidget(self.text, 1)
        actions = QHBoxLayout()
        actions.addWidget(self.copy_button)
        actions.addWidget(self.paste_button)
        actions.addWidget(self.transcribe_button)
        actions.addWidget(self.save_button)
        actions.addWidget(self.delete_button)
        actions.addWidget(self.notice, 1)
        detail_layout.addLayout(actions)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.list)
        split.addWidget(detail)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        split.setChildrenCollapsible(False)
        bottom = QHBoxLayout()
        bottom.addWidget(self.count, 1)
        bottom.addWidget(self.clear_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(14, 14, 14, 10)
        layout.addLayout(top)
        layout.addWidget(split, 1)
        layout.addLayout(bottom)
        self.setTabOrder(self.search, self.failed_only)
        self.setTabOrder(self.failed_only, self.list)
        self.setTabOrder(self.list, self.text)
        self.setTabOrder(self.text, self.copy_button)

        self._search_timer = QTimer(self, singleShot=True, interval=150, timeout=self.refresh)
        self.search.textChanged.connect(self._search_timer.start)
        self.failed_only.toggled.connect(self.refresh)
        self.list.currentItemChanged.connect(self._selected)
        self.copy_button.clicked.connect(self.copy)
        self.paste_button.clicked.connect(self.repaste)
        self.transcribe_button.clicked.connect(self.transcribe_again)
        self.save_button.clicked.connect(self.save_recording)
        self.delete_button.clicked.connect(self.delete)
        self.clear_button.clicked.connect(self._confirm_clear)
        QShortcut(QKeySequence("Ctrl+Return"), self, self.repaste)
        for keys, action in ((QKeySequence.StandardKey.Delete, self.delete), (QKeySequence.StandardKey.Copy, self.copy)):
            QShortcut(QKeySequence(keys), self.list, action).setContext(Qt.ShortcutContext.WidgetShortcut)
        QShortcut(QKeySequence(QKeySequence.StandardKey.Find), self, self.search.setFocus)
        QShortcut(QKeySequence(Qt.Key.Key_Escape), self, self.close)
        self.resize(760, 560)
        self.refresh()

    def refresh(self) -> None:
        """Reload the list from the database, keeping the selection when it is still there."""
        keep = self.current_id()
        entries = self.history.search(self.search.text(), failed_only=self.failed_only.isChecked(), limit=_SHOWN + 1)
        more, entries = len(entries) > _SHOWN, entries[:_SHOWN]
        self.list.clear()
        now = time.time()
        for entry in entries:
            preview = " ".join(entry.text.split()) or ("(a recording, not transcribed)" if entry.has_audio else "")
            item = QTreeWidgetItem([when(entry.created, now), preview, paste_status(entry)])
            item.setData(0, _ID, entry.id)
            item.setToolTip(1, entry.text[:500])
            item.setForeground(2, _FAILED if entry.paste_ok is False else self.palette().placeholderText())
            self.list.addTopLevelItem(item)
        total = self.history.count()
        filtered = self.search.text().strip() or self.failed_only.isChecked()
        if more:  # the list is cut: say so, or "1200 transcripts" over 500 rows hides the rest
            self.count.setText(f"The newest {_SHOWN} matches of {total} transcripts: add words to the search to "
                               "find an older one." if filtered else
                               f"The newest {_SHOWN} transcripts of {total}: search to find an older one.")
        else:
            self.count.setText(f"{len(entries)} of {total} transcripts" if filtered else
                               f"{total} transcript{'s' if total != 1 else ''}")
        if entries:
            self.select(keep if keep is not None and any(e.id == keep for e in entries) else entries[0].id)
        else:
            self._selected(None)

    def select(self, entry_id: int) -> None:
        for i in range(self.list.topLevelItemCount()):
            item = self.list.topLevelItem(i)
            if item.data(0, _ID) == entry_id:
                self.list.setCurrentItem(item)
                return

    def current_id(self) -> int | None:
        item = self.list.currentItem()
        return None if item is None else item.data(0, _ID)

    def current(self) -> Dictation | None:
        entry_id = self.current_id()
        return None if entry_id is None else self.history.get(entry_id)

    def _selected(self, item: QTreeWidgetItem | None, _previous=None) -> None:
        entry = None if item is None else self.history.get(item.data(0, _ID))
        for button in (self.copy_button, self.paste_button):
            button.setEnabled(entry is not None and bool(entry.text))
        for button in (self.transcribe_button, self.save_button):
            button.setEnabled(entry is not None and entry.has_audio)
        self.delete_button.setEnabled(entry is not None)
        self.notice.setText("")
        self.failed.setVisible(entry is not None and entry.paste_ok is False)
        if entry is None:
            self.text.setPlainText("")
            self.meta.setText("Nothing here yet: your dictations appear here as you make them."
                              if self.history.count() == 0 else "No transcript matches.")
            return
        self.text.setPlainText(entry.text)
        self.meta.setText(details(entry))
        if entry.paste_ok is False:
            reason = f" ({entry.paste_message.rstrip('.')})" if entry.paste_message else ""
            self.failed.setText(f"This transcript did not reach its window{reason}. Paste again puts it into the "
                                "window you switch back to; Copy puts it on the clipboard.")

    def copy(self) -> None:
        entry = self.current()
        if entry is not None:
            QGuiApplication.clipboard().setText(entry.text)
            self.notice.setText("Copied to the clipboard.")

    def repaste(self) -> None:
        entry = self.current()
        if entry is not None:
            self.repaste_requested.emit(entry.id, entry.text)

    def transcribe_again(self) -> None:
        entry = self.current()
        if entry is not None and entry.has_audio:
            self.transcribe_requested.emit(entry.id)
            self.notice.setText("Sent to the speech model: the transcript appears here when it is done.")

    def save_recording(self) -> None:
        """Save the entry's recording where the user chooses: the words are theirs, also outside this app."""
        entry = self.current()
        data = self.history.audio(entry.id) if entry is not None else None
        if data is None:
            return
        stamp = time.strftime("%Y-%m-%d %H-%M-%S", time.localtime(entry.created))
        default = str(Path.home() / f"Dictation {stamp}.wav")
        path, _ = QFileDialog.getSaveFileName(self, "Save recording", default, "WAV audio (*.wav)")
        if not path:
            return
        try:
            Path(path).write_bytes(data)
        except OSError as exc:
            self.notice.setText(f"The recording could not be saved ({exc.strerror or exc}); choose another folder.")
            return
        self.notice.setText(f"Saved as {Path(path).name}.")

    def delete(self) -> None:
        entry_id = self.current_id()
        if entry_id is not None:
            self.history.delete(entry_id)
            self.refresh()

    def _confirm_clear(self) -> None:
        answer = QMessageBox.question(self, "Clear history", "Delete every transcript (and recording) in the "
                                      "history? This cannot be undone.")
        if answer == QMessageBox.StandardButton.Yes:
            self.history.clear()
            self.refresh()

    def present(self) -> None:
        self.refresh()
        self.show()
        self.setWindowState(self.windowState() & ~Qt.WindowState.WindowMinimized)
        self.raise_()
        self.activateWindow()
        self.search.setFocus()
