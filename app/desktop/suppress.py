"""Windows and macOS: pynput's listener with event filters that swallow the hotkey's own key.

pynput hears every key there (a low-level hook on Windows, an event tap on macOS), and by default
the focused window gets them too. Its filters can drop an event system-wide: `win32_event_filter`
(called before the listener's callbacks; `suppress_event()` drops it) and `darwin_intercept`
(called after them; returning None drops it). `KeySuppressor` decides which events to drop, from
the keys held: the non-modifier key of the hotkey while the hotkey is held (its press, repeats and
release), and the cancel key while armed. Modifier events always pass: dropping a modifier's
release would leave it stuck down in the system's state, and a modifier alone types nothing.

Neither platform is exercised by the test suite (it runs on X11 only); this path is written
against pynput 1.8's listeners and is untested.
"""

from __future__ import annotations

import sys
from typing import Callable

from app.desktop.keys import Combo, is_modifier


class KeySuppressor:
    """Follows held keys and says, per event, whether the focused window must not get it."""

    def __init__(self, combo: Combo, cancel: Combo) -> None:
        self.combo, self.cancel = combo, cancel
        self.cancel_armed = False
        self._held: set[str] = set()
        self._swallowing: set[str] = set()  # keys whose press was swallowed: their release is too

    def feed(self, name: str, down: bool) -> bool:
        """One key event; True when it must be dropped."""
        if down:
            self._held.add(name)
            combos = [self.combo] + ([self.cancel] if self.cancel_armed else [])
            if not is_modifier(name) and any(name in c.parts and c.matches(self._held) for c in combos):
                self._swallowing.add(name)
            return name in self._swallowing
        self._held.discard(name)
        if name in self._swallowing:
            self._swallowing.discard(name)
            return True
        return False


def pynput_listener(keyboard, suppressor: KeySuppressor, emit: Callable[[str, bool], None], key_name):
    """A started-later pynput Listener whose events reach `emit(name, down)` and whose hotkey events
    the focused window does not see. `key_name` turns pynput's keys into names."""
    if sys.platform == "win32":
        press_messages, release_messages = (0x0100, 0x0104), (0x0101, 0x0105)  # WM_(SYS)KEYDOWN / UP
        listener = None

        def win32_event_filter(msg, data):
            if msg not in press_messages + release_messages:
                return True
            down = msg in press_messages
            try:
                name = key_name(listener._event_to_key(msg, data.vkCode))  # pynput's own conversion
            except OSError:
                return True
            if suppressor.feed(name, down):
                emit(name, down)  # a dropped event never reaches the callbacks: report it here
                listener.suppress_event()
            return True

        listener = keyboard.Listener(on_press=lambda key: emit(key_name(key), True),
                                     on_release=lambda key: emit(key_name(key), False),
                                     win32_event_filter=win32_event_filter)
        return listener

    last = {"drop": False}

    def on(key, down: bool) -> None:
        name = key_name(key)
        last["drop"] = suppressor.feed(name, down)
        emit(name, down)

    def darwin_intercept(event_type, event):
        return None if last["drop"] else event  # called right after the callbacks for this event

    return keyboard.Listener(on_press=lambda key: on(key, True), on_release=lambda key: on(key, False),
                             darwin_intercept=darwin_intercept)
