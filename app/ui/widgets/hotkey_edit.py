"""Hotkey capture: press the keys to set them, in the combo format of `app/desktop/keys.py`.

Typing "<ctrl>+<shift>+<space>" by hand is error-prone, and modifier-only hotkeys (Right Alt
alone) cannot be typed at all. While capturing, every key goes to this button (Tab and Esc
included, so they can be part of a combo); the combo is the largest set of keys held at once, taken
when the last key is released. A modifier is recorded with its side only when the combo is
modifiers alone, where the side is the point ("Right Ctrl"); with a normal key the side is left
open, so Ctrl+Shift+Space works with either Ctrl. Clicking again or leaving the button cancels.
"""

from __future__ import annotations

import sys

from PySide6.QtCore import QEvent, Qt, Signal
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import QPushButton, QWidget

from app.desktop.keys import parse_combo
from app.errors import UserError

_MODIFIER_ORDER = ("ctrl", "shift", "alt", "alt_gr", "cmd")
# X11 keysyms (what Qt reports as nativeVirtualKey there) and Windows virtual-key codes of the right-hand
# modifiers; the left-hand ones and anything unknown count as the generic modifier.
_RIGHT_SIDE = {0xFFE4: "ctrl", 0xFFE2: "shift", 0xFFEA: "alt", 0xFFEC: "cmd",  # X11 Control_R .. Super_R
               0xA3: "ctrl", 0xA1: "shift", 0xA5: "alt", 0x5C: "cmd"}  # Windows VK_RCONTROL .. VK_RWIN
_ISO_LEVEL3_SHIFT = 0xFE03  # AltGr on X11
_NAMED = {
    Qt.Key.Key_Space: "space", Qt.Key.Key_Return: "enter", Qt.Key.Key_Enter: "enter", Qt.Key.Key_Tab: "tab",
    Qt.Key.Key_Backtab: "tab", Qt.Key.Key_Escape: "esc", Qt.Key.Key_Backspace: "backspace",
    Qt.Key.Key_Delete: "delete", Qt.Key.Key_Insert: "insert", Qt.Key.Key_Home: "home", Qt.Key.Key_End: "end",
    Qt.Key.Key_PageUp: "page_up", Qt.Key.Key_PageDown: "page_down", Qt.Key.Key_Up: "up", Qt.Key.Key_Down: "down",
    Qt.Key.Key_Left: "left", Qt.Key.Key_Right: "right", Qt.Key.Key_CapsLock: "caps_lock",
    Qt.Key.Key_NumLock: "num_lock", Qt.Key.Key_ScrollLock: "scroll_lock", Qt.Key.Key_Pause: "pause",
    Qt.Key.Key_Print: "print_screen", Qt.Key.Key_Menu: "menu",
}


def key_name(key: int, native_key: int = 0) -> str | None:
    """A Qt key (plus its native code, for the side of a modifier) -> a name `parse_combo` knows."""
    key = Qt.Key(key)
    mac = sys.platform == "darwin"  # Qt swaps them there: Key_Control is Command, Key_Meta is Control
    modifiers = {Qt.Key.Key_Control: "cmd" if mac else "ctrl", Qt.Key.Key_Meta: "ctrl" if mac else "cmd",
                 Qt.Key.Key_Super_L: "cmd", Qt.Key.Key_Super_R: "cmd", Qt.Key.Key_Shift: "shift",
                 Qt.Key.Key_Alt: "alt", Qt.Key.Key_AltGr: "alt_gr"}
    if native_key == _ISO_LEVEL3_SHIFT:
        return "alt_gr"
    if key in modifiers:
        base = modifiers[key]
        return f"{base}_r" if _RIGHT_SIDE.get(native_key) == base or key == Qt.Key.Key_Super_R else base
    if key in _NAMED:
        return _NAMED[key]
    if Qt.Key.Key_F1 <= key <= Qt.Key.Key_F20:
        return f"f{key - Qt.Key.Key_F1 + 1}"
    if 0x20 < key < 0x7F:
        return chr(key).lower()
    return None


def combo_text(names: list[str]) -> str:
    """Held key names -> the canonical combo text, modifiers first ("<ctrl>+<shift>+<space>")."""
    def base(name: str) -> str:
        return name[:-2] if name.endswith(("_r", "_l")) and name[:-2] in _MODIFIER_ORDER else name

    modifiers = [n for n in names if base(n) in _MODIFIER_ORDER]
    others = [n for n in names if base(n) not in _MODIFIER_ORDER]
    if others:  # with a normal key, either side of a modifier will do
        modifiers = list(dict.fromkeys(base(n) for n in modifiers))
    modifiers.sort(key=lambda n: _MODIFIER_ORDER.index(base(n)))
    return str(parse_combo("+".join(modifiers + others)))


class HotkeyEdit(QPushButton):
    """Shows the combo ("Ctrl+Shift+Space"); activate it and press keys to change it. Emits `combo_changed(text)`,
    and `capture_toggled(on)` so the app can keep its global hotkey quiet while the user presses keys here."""

    combo_changed = Signal(str)
    capture_toggled = Signal(bool)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._combo = ""
        self._capturing = False
        self._held: dict[int, str] = {}  # Qt key -> name, for keys still down
        self._peak: list[str] = []  # the most keys held at once during this capture
        self.setCheckable(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setMinimumWidth(200)
        self.toggled.connect(self._toggled)
        self._show()

    def combo(self) -> str:
        return self._combo

    def set_combo(self, text: str) -> None:
        """Show `text` without emitting `combo_changed`."""
        self._combo = text
        self._show()

    @property
    def capturing(self) -> bool:
        return self._capturing

    def _toggled(self, on: bool) -> None:
        self._capturing = on
        self._held.clear()
        self._peak = []
        if on:
            self.grabKeyboard()
        else:
            self.releaseKeyboard()
        self._show()
        self.capture_toggled.emit(on)

    def _show(self) -> None:
        if self._capturing:
            self.setText("Press the keys…" if not self._peak else combo_label(self._peak) + "…")
            self.setAccessibleDescription("Press and release the new key combination; click to keep the old one.")
        else:
            try:
                self.setText(parse_combo(self._combo).label() if self._combo else "Not set")
            except UserError:
                self.setText(self._combo)
            self.setAccessibleDescription("Press Space, then the new key combination.")
        self.setAccessibleName(f"Hotkey: {self.text()}")

    def event(self, event: QEvent) -> bool:
        """While capturing, every key is part of the combo: Tab and Esc must not move focus or close."""
        if self._capturing and event.type() in (QEvent.Type.KeyPress, QEvent.Type.ShortcutOverride):
            if event.type() == QEvent.Type.KeyPress:
                self._key(event, down=True)
            event.accept()
            return True
        if self._capturing and event.type() == QEvent.Type.KeyRelease:
            self._key(event, down=False)
            return True
        return super().event(event)

    def focusOutEvent(self, event) -> None:
        if self._capturing:
            self.setChecked(False)
        super().focusOutEvent(event)

    def _key(self, event: QKeyEvent, down: bool) -> None:
        if event.isAutoRepeat():
            return
        name = key_name(event.key(), event.nativeVirtualKey())
        if name is None:
            return
        if down:
            self._held[event.key()] = name
            if len(self._held) >= len(self._peak):
                self._peak = list(self._held.values())
            self._show()
            return
        self._held.pop(event.key(), None)
        if self._held or not self._peak:
            return
        try:
            text = combo_text(self._peak)
        except UserError:
            self.setChecked(False)
            return
        self._combo = text
        self.setChecked(False)
        self.combo_changed.emit(text)


def combo_label(names: list[str]) -> str:
    try:
        return parse_combo(combo_text(names)).label()
    except UserError:
        return "+".join(names)
