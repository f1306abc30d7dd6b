"""The tray icon: the state at a glance, short notices, and every action in its context menu.

Every action is in the menu because some tray hosts (GNOME's AppIndicator extension) swallow
clicks on the icon itself; where a left click does arrive, it opens the same menu. Notices queue:
each is shown for its time before the next, since a tray balloon replaces the one before it (two
notices at start-up used to hide the first within 50 ms). Nothing here takes keyboard focus on its
own: a focused status window would receive the paste meant for the user's window.
"""

from __future__ import annotations

import sys
from pathlib import Path

from collections import deque

from PySide6.QtCore import QObject, QTimer, QUrl, Signal
from PySide6.QtGui import QAction, QCursor, QDesktopServices, QIcon
from PySide6.QtWidgets import QMenu, QMessageBox, QSystemTrayIcon

from app.controller import State

_ICON_FOR = {State.IDLE: "idle", State.RECORDING: "recording", State.TRANSCRIBING: "transcribing",
             State.PASTING: "transcribing", State.ERROR: "error"}
_TOOLTIP = {State.IDLE: "Ready", State.RECORDING: "Recording…", State.TRANSCRIBING: "Transcribing…",
            State.PASTING: "Pasting…", State.ERROR: "Something went wrong"}
APP_TITLE = "Dictate"


def resources_dir() -> Path:
    """resources/ beside the package, or inside a PyInstaller bundle."""
    base = Path(getattr(sys, "_MEIPASS", Path(__file__).resolve().parents[2]))
    return base / "resources"


class Tray(QObject):
    """Signals the user's menu choices; the app decides what they do."""

    toggle_requested = Signal()
    cancel_requested = Signal()
    settings_requested = Signal()
    history_requested = Signal()
    retry_requested = Signal()
    quit_requested = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._icons = {state: QIcon(str(resources_dir() / "icons" / f"{name}.svg")) for state, name in _ICON_FOR.items()}
        self._menu = QMenu()
        self._status = self._menu.addAction("Starting…")
        self._status.setEnabled(False)
        self._menu.addSeparator()
        self._toggle = self._add("Start dictation", self.toggle_requested)
        self._cancel = self._add("Cancel", self.cancel_requested)
        self._retry = self._add("Try the speech model again", self.retry_requested)
        self._retry.setVisible(False)
        self._menu.addSeparator()
        self._add("History…", self.history_requested)
        self._add("Settings…", self.settings_requested)
        self._add("Quit", self.quit_requested)
        self._icon = QSystemTrayIcon(self._icons[State.IDLE], self)
        self._icon.setContextMenu(self._menu)
        self._icon.activated.connect(self._activated)
        self._notices: deque[tuple[str, bool]] = deque()
        self.notice: str | None = None  # the notice on display, if any
        self._notice_timer = QTimer(self, singleShot=True, timeout=self._next_notice)
        self._state = State.IDLE
        self._message_box: QMessageBox | None = None
        self.set_state(State.IDLE)

    def _add(self, text: str, signal) -> QAction:
        action = self._menu.addAction(text)
        action.triggered.connect(signal.emit)
        return action

    @property
    def available(self) -> bool:
        return QSystemTrayIcon.isSystemTrayAvailable()

    @property
    def state(self) -> State:
        """The state the icon shows."""
        return self._state

    @property
    def visible(self) -> bool:
        return self._icon.isVisible()

    def show(self) -> None:
        self._icon.show()

    @property
    def status(self) -> str:
        """The first, greyed-out line of the menu, as the user reads it."""
        return self._status.text()

    def set_status(self, text: str) -> None:
        """The first, greyed-out line of the menu: what the app is doing and how to dictate."""
        self._status.setText(text)
        self._icon.setToolTip(f"{APP_TITLE}: {_TOOLTIP[self._state]}\n{text}")

    def offer_retry(self, offered: bool) -> None:
        """Show "Try the speech model again" in the menu (while the model cannot run)."""
        self._retry.setVisible(offered)

    @property
    def retry_offered(self) -> bool:
        return self._retry.isVisible()

    def set_state(self, state: State) -> None:
        self._state = state
        self._icon.setIcon(self._icons[state])
        self._toggle.setText("Stop dictation" if state is State.RECORDING else "Start dictation")
        self._cancel.setEnabled(state in (State.RECORDING, State.TRANSCRIBING))
        self._icon.setToolTip(f"{APP_TITLE}: {_TOOLTIP[state]}\n{self._status.text()}")

    def notify(self, message: str, error: bool = False) -> None:
        """Show `message` after the notices before it (an error for 6 s, anything else for 2 s)."""
        if (message, error) in self._notices or (message == self.notice and not self._notices):
            return  # already waiting, or on display: once is enough
        self._notices.append((message, error))
        if not self._notice_timer.isActive():
            self._next_notice()

    def _next_notice(self) -> None:
        if not self._notices:
            self.notice = None
            return
        message, error = self._notices.popleft()
        icon = QSystemTrayIcon.MessageIcon.Warning if error else QSystemTrayIcon.MessageIcon.Information
        seconds = 6 if error else 2
        self._icon.showMessage(APP_TITLE, message, icon, seconds * 1000)
        self.notice = message
        self._notice_timer.start(seconds * 1000)

    def _activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        """A left click (where the tray host passes it on) opens the menu, like a right click."""
        if reason == QSystemTrayIcon.ActivationReason.Trigger:
            self._menu.popup(QCursor.pos())

    def show_settings(self, settings_file: Path, summary: str) -> None:
        """Until the settings window exists: say where the settings live, with a button to open them."""
        if self._message_box is None:
            box = QMessageBox(QMessageBox.Icon.Information, f"{APP_TITLE} settings",
                              f"{summary}\n\nThe settings are kept in:\n{settings_file}\n\n"
                              "Edit that file and restart the app to change them.")
            open_button = box.addButton("Open settings file", QMessageBox.ButtonRole.ActionRole)
            box.addButton(QMessageBox.StandardButton.Close)
            open_button.clicked.connect(lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(str(settings_file))))
            box.setModal(False)
            self._message_box = box
        self._message_box.show()
        self._message_box.raise_()
