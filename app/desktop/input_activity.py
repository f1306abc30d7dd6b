"""Has the user typed or clicked since our last paste? X11's RECORD extension sees every key and button.

Why: two dictations in a row ("Hello Anna." then "How are you?") need a space between them, but only
where the cursor still stands right after the first: after an Enter, a click elsewhere or a word typed
by hand, a space would be a stray character. No X11 call tells where a window's cursor is, so the
paster asks this monitor instead: no key and no click since the last paste, and the same window
focused, means the cursor has not moved (`app/desktop/continuation.py`).

What is not the user moving the cursor, and so is not counted: modifier keys alone, the scroll
wheel, the hotkey and the cancel key (grabbed by `x11_grab.py`: while held, every key comes to us,
not to the focused window), and our own paste keystrokes or typing (`mute`). Elsewhere (Wayland,
macOS, Windows) there is no such monitor, and no space is added.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from Xlib import X, display, error  # this module is imported on X11 only
from Xlib.ext import record
from Xlib.protocol import rq

log = logging.getLogger(__name__)

_WHEEL_BUTTONS = range(4, 8)  # scrolling moves the view, not the cursor
_MODIFIER_BITS = 0xFF  # the state's modifier bits; the rest are pointer buttons
LATE_S = 0.1  # typed text's last synthetic keys may reach the monitor this long after the typing returned

Grabs = Callable[[], frozenset[tuple[int, int]]]


class InputActivity:
    """Counts the user's key and button presses that can move a text cursor; `count` grows with each.

    `grabs` returns the (keycode, modifier state) pairs the hotkey grab holds, read on each press.
    """

    def __init__(self, grabs: Grabs = frozenset) -> None:
        self.count = 0
        self._grabs = grabs
        self._muted_until: float | None = None  # None: counting; inf while our paste runs
        self._grab_key: int | None = None  # the grabbed key held now: the keys come to us until its release
        self._modifiers: set[int] = set()
        self._lock = threading.Lock()
        self._record: display.Display | None = None
        self._control: display.Display | None = None
        self._context = None

    def start(self) -> bool:
        """Start watching on a thread of its own; False (and nothing watched) where RECORD is missing."""
        try:
            self._record, self._control = display.Display(), display.Display()
            if not self._record.has_extension("RECORD"):
                raise error.DisplayError("the X server has no RECORD extension")
            self._modifiers = {code for codes in self._control.get_modifier_mapping() for code in codes if code}
            self._context = self._record.record_create_context(0, [record.AllClients], [{
                "core_requests": (0, 0), "core_replies": (0, 0), "ext_requests": (0, 0, 0, 0),
                "ext_replies": (0, 0, 0, 0), "delivered_events": (0, 0), "errors": (0, 0),
                "device_events": (X.KeyPress, X.ButtonPress),  # key press, key release, button press
                "client_started": False, "client_died": False}])
            self._record.sync()
        except (error.DisplayError, error.XError, OSError) as exc:
            log.info("input activity: not watched (%s); no space is added between dictations", exc)
            self._close()
            return False
        threading.Thread(target=self._run, name="input-activity", daemon=True).start()
        return True

    def stop(self) -> None:
        if self._control is not None and self._context is not None:
            try:
                self._control.record_disable_context(self._context)
                self._control.sync()
            except (error.XError, OSError):
                pass

    def mute(self, muted: bool, *, grace_s: float = 0.0) -> None:
        """While muted (our paste runs) nothing counts, nor for `grace_s` after: those keys are ours. A paste
        keystroke needs none (the paster waits 150 ms after the target read the clipboard); typing does."""
        with self._lock:
            self._muted_until = float("inf") if muted else time.monotonic() + grace_s

    def _run(self) -> None:
        try:
            self._record.record_enable_context(self._context, self._reply)  # returns once disabled
            self._record.record_free_context(self._context)
        except (error.XError, OSError) as exc:
            log.warning("input activity: stopped watching (%s)", exc)
        finally:
            self._close()

    def _reply(self, reply) -> None:
        if reply.category != record.FromServer or reply.client_swapped or not reply.data or reply.data[0] < 2:
            return
        data = reply.data
        while data:
            event, data = rq.EventField(None).parse_binary_value(data, self._record.display, None, None)
            self.event(event.type, event.detail, event.state)

    def event(self, kind: int, detail: int, state: int) -> None:
        """One key press or release or button press (from the RECORD thread; tests feed it directly)."""
        if kind == X.KeyRelease:
            if detail == self._grab_key:
                self._grab_key = None
            return
        if kind == X.KeyPress:
            if self._grab_key is not None or detail in self._modifiers:
                return
            if (detail, state & _MODIFIER_BITS) in self._grabs():
                self._grab_key = detail
                return
        elif kind != X.ButtonPress or detail in _WHEEL_BUTTONS:
            return
        with self._lock:
            if self._muted_until is not None and time.monotonic() < self._muted_until:
                return
            self.count += 1

    def _close(self) -> None:
        for dpy in (self._record, self._control):
            if dpy is not None:
                try:
                    dpy.close()
                except (error.XError, OSError):
                    pass
        self._record = self._control = None
