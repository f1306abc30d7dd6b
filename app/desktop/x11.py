"""Key injection and window lookup on X11, in-process through XTest (python-xlib, which pynput uses).

The same XTest requests that xdotool sends, without a process start per paste (about 10 ms each
on a busy machine, and a paste needs two: find the window, send the keys). xdotool stays the
fallback for what it does better: keysyms missing from the current keymap (it remaps a spare
keycode) and typing arbitrary Unicode text.
"""

from __future__ import annotations

import shutil
import subprocess
import threading

from app.errors import UserError

_MODIFIER_KEYSYMS = {"ctrl": "Control_L", "shift": "Shift_L", "alt": "Alt_L", "super": "Super_L", "cmd": "Super_L"}


class X11Keys:
    """One X connection, opened once and kept; after `warm_up` only the GUI thread uses it."""

    def __init__(self) -> None:
        self._display = None
        self._lock = threading.Lock()  # `warm_up` may run on a helper thread while a paste starts

    def warm_up(self) -> None:
        """Opening the connection costs python-xlib ~0.1-0.2 s of set-up: pay it before the first paste."""
        self._dpy()

    def _dpy(self):
        with self._lock:
            return self._connect()

    def _connect(self):
        if self._display is None:
            from Xlib import display as xdisplay
            from Xlib.error import DisplayError

            try:
                self._display = xdisplay.Display()
            except DisplayError as exc:
                raise UserError(f"Cannot reach the X display ({exc}); is DISPLAY set?", code="no_display") from exc
            if not self._display.has_extension("XTEST"):
                raise UserError("The X server lacks the XTEST extension needed to send the paste keystroke.",
                                code="no_xtest")
        return self._display

    def window_class(self) -> str | None:
        """WM_CLASS class name of the focused window (e.g. "XTerm"), or None when unknown."""
        from Xlib import X

        dpy = self._dpy()
        root = dpy.screen().root
        active = root.get_full_property(dpy.intern_atom("_NET_ACTIVE_WINDOW"), X.AnyPropertyType)
        window = dpy.create_resource_object("window", active.value[0]) if active and active.value[0] else None
        window = window or dpy.get_input_focus().focus
        try:
            while window and window != root and not isinstance(window, int):
                wm_class = window.get_wm_class()
                if wm_class:
                    return wm_class[1]
                window = window.query_tree().parent  # the focus may sit on a child of the toplevel
        except Exception:  # the window vanished meanwhile
            return None
        return None

    def send(self, keys: str) -> None:
        """Press and release a combo like "ctrl+shift+v", with modifiers the user still holds lifted first."""
        from Xlib import XK, X
        from Xlib.ext import xtest

        dpy = self._dpy()
        names = [_MODIFIER_KEYSYMS.get(k, k) for k in keys.lower().split("+")]
        codes = [dpy.keysym_to_keycode(XK.string_to_keysym(n)) for n in names]
        if not all(codes):  # a keysym the current layout lacks: xdotool knows how to remap one
            return _xdotool("key", "--clearmodifiers", "--delay", "0", keys)
        held = self._held_modifiers()
        for code in held:
            xtest.fake_input(dpy, X.KeyRelease, code)
        for code in codes:
            xtest.fake_input(dpy, X.KeyPress, code)
        for code in reversed(codes):
            xtest.fake_input(dpy, X.KeyRelease, code)
        for code in held:  # give back what the user's fingers still hold
            xtest.fake_input(dpy, X.KeyPress, code)
        dpy.sync()

    def _held_modifiers(self) -> list[int]:
        dpy = self._dpy()
        keymap = dpy.query_keymap()  # 32 bytes, one bit per keycode
        modifiers = {code for codes in dpy.get_modifier_mapping() for code in codes if code}
        return [code for code in modifiers if keymap[code // 8] & (1 << (code % 8))]

    def type_text(self, text: str) -> None:
        """Type text keystroke by keystroke (the slow fallback for windows that refuse pastes)."""
        _xdotool("type", "--clearmodifiers", "--delay", "2", "--", text)


def _xdotool(*args: str) -> None:
    if shutil.which("xdotool") is None:
        raise UserError("xdotool is needed to type into this window; install it (sudo apt install xdotool).",
                        code="no_xdotool")
    done = subprocess.run(["xdotool", *args], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise UserError(f"xdotool could not send the keys ({done.stderr.strip() or done.returncode}).",
                        code="paste_failed")
