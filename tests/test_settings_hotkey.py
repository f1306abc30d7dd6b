"""Hotkey capture: pressing keys sets the combo, in the format app/desktop/keys.py parses."""

from __future__ import annotations

import os

from PySide6.QtCore import QEvent, Qt
from PySide6.QtGui import QKeyEvent

from app.desktop.keys import parse_combo
from app.ui.settings_store import SettingsStore
from app.ui.settings_window import SettingsWindow
from app.ui.widgets.hotkey_edit import HotkeyEdit, combo_text, key_name

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

CONTROL_R, ALT_R = 0xFFE4, 0xFFEA  # X11 keysyms Qt reports as the native virtual key


def press(widget, key, native=0, down=True) -> None:
    kind = QEvent.Type.KeyPress if down else QEvent.Type.KeyRelease
    event = QKeyEvent(kind, key, Qt.KeyboardModifier.NoModifier, 0, native, 0)
    widget.event(event)


def capture(widget, *keys) -> None:
    """Press `keys` ((qt_key, native) pairs) in order, then release them in reverse."""
    for key, native in keys:
        press(widget, key, native)
    for key, native in reversed(keys):
        press(widget, key, native, down=False)


def test_key_names_match_the_combo_parser():
    assert key_name(Qt.Key.Key_Control, CONTROL_R) == "ctrl_r" and key_name(Qt.Key.Key_Control) == "ctrl"
    assert key_name(Qt.Key.Key_Alt, ALT_R) == "alt_r" and key_name(Qt.Key.Key_AltGr) == "alt_gr"
    assert [key_name(k) for k in (Qt.Key.Key_Space, Qt.Key.Key_F9, Qt.Key.Key_D, Qt.Key.Key_Escape)] == [
        "space", "f9", "d", "esc"]
    assert combo_text(["shift", "ctrl_r", "space"]) == "<ctrl>+<shift>+<space>"  # sides dropped with a key
    assert combo_text(["ctrl_r"]) == "<ctrl_r>"  # kept when modifiers are the whole combo
    for text in (combo_text(["alt_r"]), combo_text(["ctrl", "alt", "d"])):
        assert str(parse_combo(text)) == text


def test_pressing_keys_sets_the_hotkey(qtbot):
    edit = HotkeyEdit()
    qtbot.addWidget(edit)
    edit.show()
    edit.set_combo("<ctrl>+<shift>+<space>")
    assert edit.text() == "Ctrl+Shift+Space"
    changes: list[str] = []
    edit.combo_changed.connect(changes.append)

    edit.click()
    assert edit.capturing and edit.text() == "Press the keys…"
    press(edit, Qt.Key.Key_Control)
    press(edit, Qt.Key.Key_Alt)
    assert edit.text() == "Ctrl+Alt…"
    press(edit, Qt.Key.Key_D)
    press(edit, Qt.Key.Key_D, down=False)
    press(edit, Qt.Key.Key_Alt, down=False)
    assert edit.capturing and changes == []  # Ctrl is still held
    press(edit, Qt.Key.Key_Control, down=False)
    assert not edit.capturing and changes == ["<ctrl>+<alt>+d"] and edit.text() == "Ctrl+Alt+D"

    edit.click()
    capture(edit, (Qt.Key.Key_Alt, ALT_R))  # a modifier alone: Right Alt
    assert changes[-1] == "<alt_r>" and edit.text() == "Right Alt"

    edit.click()
    capture(edit, (Qt.Key.Key_Escape, 0))  # Esc is a key here, not "close the window"
    assert changes[-1] == "<esc>"


def test_clicking_again_keeps_the_old_hotkey(qtbot):
    edit = HotkeyEdit()
    qtbot.addWidget(edit)
    edit.set_combo("<alt_r>")
    changes: list[str] = []
    edit.combo_changed.connect(changes.append)
    edit.click()
    press(edit, Qt.Key.Key_Shift)
    edit.click()
    assert not edit.capturing and changes == [] and edit.combo() == "<alt_r>" and edit.text() == "Right Alt"


def keys_page(qtbot, path):
    """A settings store on `path` and its window, showing the Keys page."""
    store = SettingsStore(path=path)
    window = SettingsWindow(store, mic_monitor=False)
    qtbot.addWidget(window)
    window.show()
    window.show_page("Keys")
    return store, window


def test_a_bare_letter_pressed_in_settings_is_refused_and_the_old_hotkey_shown(qtbot, tmp_path):
    """Pressing A (or Esc) set the hotkey to it: saved, grabbed from every program, and the user could no
    longer type an "a" or cancel anything. It is refused beside the field; the button shows what still applies."""
    path = tmp_path / "settings.json"
    store, window = keys_page(qtbot, path)
    hotkey, error = window.editors["hotkey"].widget, window.errors["hotkey"]
    for key in (Qt.Key.Key_A, Qt.Key.Key_Escape):
        hotkey.click()
        capture(hotkey, (key, 0))
        assert not hotkey.capturing and hotkey.text() == "Ctrl+Shift+Space"
        assert not error.isHidden() and "alone cannot be the hotkey" in error.text() and "F9" in error.text()
        assert store.settings.hotkey == "<ctrl>+<shift>+<space>" and not path.exists()
    hotkey.click()
    capture(hotkey, (Qt.Key.Key_F9, 0))
    assert error.isHidden() and hotkey.text() == "F9" and store.settings.hotkey == "<f9>"
    cancel = window.editors["cancel_key"].widget
    cancel.click()
    capture(cancel, (Qt.Key.Key_Q, 0))  # taken only while recording: any key will do
    assert store.settings.cancel_key == "q" and window.errors["cancel_key"].isHidden()


def test_one_key_cannot_both_start_and_cancel(qtbot, tmp_path):
    """With F9 as hotkey and cancel key, the press that stops a dictation would also throw it away. The
    second of the two to be set to it is refused beside its field, and nothing is saved."""
    path = tmp_path / "settings.json"
    store, window = keys_page(qtbot, path)
    hotkey, cancel = window.editors["hotkey"].widget, window.editors["cancel_key"].widget
    hotkey.click()
    capture(hotkey, (Qt.Key.Key_F9, 0))
    assert store.settings.hotkey == "<f9>"
    cancel.click()
    capture(cancel, (Qt.Key.Key_F9, 0))
    error = window.errors["cancel_key"]
    assert not error.isHidden() and "F9 is the hotkey, so it cannot also be the cancel key" in error.text()
    assert store.settings.cancel_key == "<esc>" and cancel.text() == "Esc"
    cancel.click()
    capture(cancel, (Qt.Key.Key_F10, 0))
    assert store.settings.cancel_key == "<f10>" and error.isHidden()
    hotkey.click()
    capture(hotkey, (Qt.Key.Key_F10, 0))
    assert "F10 is the cancel key, so it cannot also be the hotkey" in window.errors["hotkey"].text()
    assert store.settings.hotkey == "<f9>" and hotkey.text() == "F9"
