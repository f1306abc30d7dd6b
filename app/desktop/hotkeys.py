"""Global hotkeys: pynput's listener feeding the combo logic of `keys.py` on the GUI thread.

pynput is imported only once started: importing its keyboard module without a display raises, and
on Wayland it would only see keys typed into X11 windows, so there we refuse and tell the user to
bind `python -m app toggle` instead. pynput calls back on its own thread; each raw key event is
handed to the GUI thread through a queued signal with the time it happened, and the grace period
for X11 auto-repeat is a QTimer there.
"""

from __future__ import annotations

import logging
import threading
import time

from PySide6.QtCore import QObject, QTimer, Signal

from app.desktop.keys import Combo, ComboTracker
from app.desktop.session import WAYLAND_HOTKEY_HINT, display_server
from app.errors import UserError

log = logging.getLogger(__name__)

_ISO_LEVEL3_SHIFT = 0xFE03  # the AltGr keysym on most X11 layouts; pynput has no Key member for it


def key_name(key) -> str:
    """pynput's Key / KeyCode -> the names `keys.py` speaks ("ctrl_r", "space", "d", "vk65027")."""
    name = getattr(key, "name", None)
    if name:
        return name
    if getattr(key, "vk", None) == _ISO_LEVEL3_SHIFT:
        return "alt_gr"
    char = getattr(key, "char", None)
    return char.lower() if char else f"vk{getattr(key, 'vk', '?')}"


class HotkeyListener(QObject):
    """Emits `pressed(time)`, `released(time of the real release)` and `cancel_pressed()`; `ready` once
    listening, or `unavailable(message)`."""

    pressed = Signal(float)
    released = Signal(float)
    cancel_pressed = Signal()
    ready = Signal()
    unavailable = Signal(str)
    _raw = Signal(str, bool, float)

    def __init__(self, combo: Combo, cancel: Combo, *, grace_s: float = 0.05, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._grace_s = grace_s
        self.set_combos(combo, cancel)
        self._listener = None
        self._timer = QTimer(self, singleShot=True, timeout=self._poll)
        self._raw.connect(self._on_raw)

    def set_combos(self, combo: Combo, cancel: Combo) -> None:
        self._tracker = ComboTracker(combo, self._grace_s)
        self._cancel = ComboTracker(cancel, 0.0)

    def start(self) -> None:
        """Begin listening in the background; `ready` or `unavailable(message)` follows.

        Raises UserError at once where global hotkeys cannot work at all (Wayland, no display).
        pynput's import and X connection take a few hundred milliseconds of pure Python, so they run
        on a helper thread: the tray and the remote channel answer meanwhile.
        """
        server = display_server()
        if server == "wayland":
            raise UserError(WAYLAND_HOTKEY_HINT, code="no_hotkeys")
        if server == "none":
            raise UserError("No graphical session was found, so there are no global hotkeys; start the app from "
                            "your desktop.", code="no_hotkeys")
        threading.Thread(target=self._listen, name="hotkeys-start", daemon=True).start()

    def _listen(self) -> None:
        try:
            from pynput import keyboard

            listener = keyboard.Listener(
                on_press=lambda key: self._raw.emit(key_name(key), True, time.monotonic()),
                on_release=lambda key: self._raw.emit(key_name(key), False, time.monotonic()),
            )
            listener.start()
            listener.wait()  # returns once the X record context is live, so no early press is missed
        except Exception as exc:  # pynput raises various errors when no backend can load
            self.unavailable.emit(f"Global hotkeys are unavailable ({exc}); bind `python -m app toggle` to a "
                                  "shortcut in your desktop's keyboard settings instead.")
            return
        self._listener = listener
        log.info("hotkeys: listening for %s (cancel: %s)", self._tracker.combo, self._cancel.combo)
        self.ready.emit()

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.stop()
            self._listener = None

    def _on_raw(self, name: str, down: bool, at: float) -> None:
        for kind, when in self._tracker.key(name, down, at):
            (self.pressed if kind == "press" else self.released).emit(when)
        if any(kind == "press" for kind, _ in self._cancel.key(name, down, at)):
            self.cancel_pressed.emit()
        self._schedule()

    def _poll(self) -> None:
        for _, when in self._tracker.poll(time.monotonic()):
            self.released.emit(when)
        self._schedule()

    def _schedule(self) -> None:
        deadline = self._tracker.deadline
        if deadline is None:
            self._timer.stop()
        else:
            self._timer.start(max(0, int((deadline - time.monotonic()) * 1000) + 1))
