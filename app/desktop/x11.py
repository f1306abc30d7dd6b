"""Key injection and window lookup on X11, in-process through XTest (python-xlib, which pynput uses).

The same XTest requests that xdotool sends, without a process start per paste (about 10 ms each
on a busy machine, and a paste needs two: find the window, send the keys). Typing text (the
fallback when the target reads no paste) presses each character's key; a character the keyboard
layout lacks (any Unicode) is lent a spare keycode: the spare keycode is mapped to the missing
keysym and the key typed. Clients re-read the keymap when told it changed, and they read it as it is
when they get to it, not as it was when the key was sent: so a lent keycode stays lent (a busy
target handles the keys seconds later, and a mapping cleared meanwhile typed nothing), and is only
lent again to another character when no spare is left, or given back at exit (`close`). Each
remapping waits `REMAP_S` before the keys. xdotool stays the fallback for a paste combination whose
keysym the layout lacks.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
import time

from app.errors import UserError

log = logging.getLogger(__name__)

REMAP_S = 0.05
_CONTROL_KEYSYMS = {"\n": 0xFF0D, "\t": 0xFF09}  # Return, Tab

_MODIFIER_KEYSYMS = {"ctrl": "Control_L", "shift": "Shift_L", "alt": "Alt_L", "super": "Super_L", "cmd": "Super_L"}


class X11Keys:
    """One X connection, opened once and kept; after `warm_up` only the GUI thread uses it."""

    mechanism = "XTest (X11)"  # for the settings window

    def __init__(self) -> None:
        self._display = None
        self._lock = threading.Lock()  # `warm_up` may run on a helper thread while a paste starts
        self._lent: dict[int, int] = {}  # keysym -> the spare keycode lent to it (still mapped), oldest first
        self._pings = 0

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

    def _focused(self):
        """The focused toplevel (the window manager's _NET_ACTIVE_WINDOW), else X's input focus; None when the
        window manager says no window is active and X's focus is on no application's window (the desktop was
        clicked, or the focused window closed: window managers then keep the focus on a window of their own)."""
        from Xlib import X

        dpy = self._dpy()
        root = dpy.screen().root
        atom = dpy.intern_atom("_NET_ACTIVE_WINDOW")
        active = root.get_full_property(atom, X.AnyPropertyType)
        if active is not None and len(active.value) and active.value[0]:
            return dpy.create_resource_object("window", active.value[0])
        focus = dpy.get_input_focus().focus
        supported = root.get_full_property(dpy.intern_atom("_NET_SUPPORTED"), X.AnyPropertyType)
        if supported is not None and atom in supported.value and self._class_of(focus) is None:
            return None  # the window manager keeps the active window, and there is none
        return focus

    def focused_window(self) -> int:
        """The focused window's id (0 when X does not say): its X client is the one whose clipboard read is the
        paste. Raises UserError when no window has the focus: a paste or typed text would go nowhere."""
        window = self._focused()
        if window is None:
            raise UserError("No window had the keyboard focus; click into the window the text is for",
                            code="no_focus")
        return 0 if isinstance(window, int) else window.id

    def window_class(self) -> str | None:
        """WM_CLASS class name of the focused window (e.g. "XTerm"), or None when unknown."""
        return self._class_of(self._focused())

    def _class_of(self, window) -> str | None:
        """WM_CLASS class name of `window` or of the toplevel it is in; None for none, or for a window of no
        application (the root, the window manager's own)."""
        root = self._dpy().screen().root
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
        """Press and release a combo like "ctrl+shift+v", with the modifiers the user still holds lifted first
        (Space let go before Ctrl and Shift: the transcript can be ready before the fingers are up).

        Nothing is pressed back afterwards. The X server keeps each device's keys apart: a modifier
        pressed back through XTest while a finger holds it on the keyboard stays down on XTest's device
        after the finger lets go, and the server then drops XTest's next press of it as a duplicate: the
        next paste's Ctrl went missing and a "v" was typed into the user's document (the desktop test
        `test_two_dictations_from_a_real_keyboard...` holds the keys on another device, as a person does)."""
        from Xlib import XK, X
        from Xlib.ext import xtest

        dpy = self._dpy()
        names = [_MODIFIER_KEYSYMS.get(k, k) for k in keys.lower().split("+")]
        # keysym names are case-sensitive: "v" but "Insert"
        codes = [dpy.keysym_to_keycode(XK.string_to_keysym(n) or XK.string_to_keysym(n.capitalize())) for n in names]
        for code in self._held_modifiers():
            xtest.fake_input(dpy, X.KeyRelease, code)
        if not all(codes):  # a keysym the current layout lacks: xdotool knows how to remap one (not with
            dpy.sync()  # --clearmodifiers, which presses the modifiers back: the lift above does its part)
            return _xdotool("key", "--delay", "0", keys)
        for code in codes:
            xtest.fake_input(dpy, X.KeyPress, code)
        for code in reversed(codes):
            xtest.fake_input(dpy, X.KeyRelease, code)
        dpy.sync()

    def answers(self, window: int, timeout_s: float) -> bool | None:
        """Does `window`'s program handle its events now? It is asked with _NET_WM_PING (EWMH), which it answers
        once it got to the events sent before: True when it answered within `timeout_s`, False when not (busy,
        or hung), None when the window takes no ping (nothing can be told)."""
        import select

        from Xlib import X
        from Xlib.protocol import event

        dpy = self._dpy()
        protocols, ping = dpy.intern_atom("WM_PROTOCOLS"), dpy.intern_atom("_NET_WM_PING")
        target = dpy.create_resource_object("window", window)
        try:
            taken = target.get_full_property(protocols, X.AnyPropertyType)
        except Exception:  # the window is gone
            return None
        if taken is None or ping not in taken.value:
            return None
        self._pings += 1
        stamp = self._pings
        root = dpy.screen().root
        root.change_attributes(event_mask=X.SubstructureNotifyMask)  # where the answer is sent
        try:
            target.send_event(event.ClientMessage(window=target, client_type=protocols,
                                                  data=(32, [ping, stamp, window, 0, 0])), event_mask=0)
            dpy.flush()
            deadline = time.monotonic() + timeout_s
            while True:
                while dpy.pending_events():
                    got = dpy.next_event()
                    if (got.type == X.ClientMessage and got.client_type == protocols
                            and list(got.data[1][:2]) == [ping, stamp]):
                        return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                select.select([dpy.fileno()], [], [], left)
        finally:
            root.change_attributes(event_mask=X.NoEventMask)
            dpy.sync()
            while dpy.pending_events():
                dpy.next_event()

    def _held_modifiers(self) -> list[int]:
        dpy = self._dpy()
        keymap = dpy.query_keymap()  # 32 bytes, one bit per keycode
        modifiers = {code for codes in dpy.get_modifier_mapping() for code in codes if code}
        return [code for code in modifiers if keymap[code // 8] & (1 << (code % 8))]

    def type_text(self, text: str) -> None:
        """Type text keystroke by keystroke (the fallback for windows that read no paste), any Unicode; held
        modifiers are lifted first and not pressed again, as in `send`; Caps Lock, on, is off while it types."""
        from Xlib import X, XK
        from Xlib.ext import xtest

        dpy = self._dpy()
        while dpy.pending_events():  # MappingNotify from earlier remappings: nothing to act on
            dpy.next_event()
        shift = dpy.keysym_to_keycode(XK.string_to_keysym("Shift_L"))
        spares = self._spare_keycodes()
        held = self._held_modifiers()
        for code in held:
            xtest.fake_input(dpy, X.KeyRelease, code)
        caps = self._caps_lock_on()
        if caps:  # Caps Lock would invert the case of every letter: off for the typing, on again after it
            xtest.fake_input(dpy, X.KeyPress, caps)
            xtest.fake_input(dpy, X.KeyRelease, caps)
        try:
            start = 0
            while start < len(text):
                steps, remapped, start = self._plan(text, start, spares)
                for keysym, code in remapped.items():
                    dpy.change_keyboard_mapping(code, [(keysym, keysym)])
                    self._lent = {k: c for k, c in self._lent.items() if c != code and k != keysym}
                    self._lent[keysym] = code
                if remapped:
                    dpy.sync()
                    time.sleep(REMAP_S)
                for code, shifted in steps:
                    if shifted:
                        xtest.fake_input(dpy, X.KeyPress, shift)
                    xtest.fake_input(dpy, X.KeyPress, code)
                    xtest.fake_input(dpy, X.KeyRelease, code)
                    if shifted:
                        xtest.fake_input(dpy, X.KeyRelease, shift)
                dpy.sync()
                if start < len(text):
                    time.sleep(REMAP_S)  # the next part lends these keycodes again: give the target a moment
        finally:
            if caps:
                xtest.fake_input(dpy, X.KeyPress, caps)
                xtest.fake_input(dpy, X.KeyRelease, caps)
            dpy.sync()

    def _caps_lock_on(self) -> int:
        """The Caps_Lock key's keycode when Caps Lock is on (0 when it is off, or the layout has no such key)."""
        from Xlib import XK, X

        dpy = self._dpy()
        if not dpy.screen().root.query_pointer().mask & X.LockMask:
            return 0
        return dpy.keysym_to_keycode(XK.string_to_keysym("Caps_Lock")) or 0

    def close(self) -> None:
        """At exit: give back the keycodes lent to characters (their keys were typed long ago)."""
        if self._display is None or not self._lent:
            return
        try:
            for code in self._lent.values():
                self._display.change_keyboard_mapping(code, [(0, 0)])
            self._display.sync()
        except Exception as exc:  # the X server went first
            log.info("x11: could not give back the lent keycodes: %s", exc)
        self._lent = {}

    def _plan(self, text: str, start: int, spares: list[int]) -> tuple[list[tuple[int, bool]], dict[int, int], int]:
        """(keycode, with Shift) per character from `start` on, as far as the spare keycodes reach for the
        characters the layout lacks; returns the steps, the keysyms to map, and where it stopped."""
        dpy = self._dpy()
        steps: list[tuple[int, bool]] = []
        remapped: dict[int, int] = {}
        used: set[int] = set()  # lent keycodes this part types with their mapping as it is
        index = start
        for index in range(start, len(text)):
            char = text[index]
            keysym = _CONTROL_KEYSYMS.get(char) or (ord(char) if ord(char) < 0x100 else 0x01000000 | ord(char))
            found = [(code, level) for code, level in dpy.keysym_to_keycodes(keysym) if level in (0, 1)]
            if found:
                code, level = min(found, key=lambda f: f[1])
                steps.append((code, level == 1))
                continue
            if keysym in self._lent and self._lent[keysym] in spares and self._lent[keysym] not in remapped.values():
                steps.append((self._lent[keysym], False))  # lent earlier and still mapped to it
                used.add(self._lent[keysym])
                continue
            if keysym not in remapped:
                free = [code for code in spares if code not in used and code not in remapped.values()]
                if not free:
                    if not spares:
                        raise UserError(f"The keyboard layout has no key for '{char}' and no free key to lend it, "
                                        "so the text cannot be typed.", code="paste_failed")
                    return steps, remapped, index
                remapped[keysym] = free[0]
            steps.append((remapped[keysym], False))
        return steps, remapped, len(text)

    def _spare_keycodes(self) -> list[int]:
        """Keycodes with no keysym at all, then those we lent (the longest lent first): safe to lend to a
        character. A lent keycode someone else has mapped since is no longer ours."""
        dpy = self._dpy()
        low, high = dpy.display.info.min_keycode, dpy.display.info.max_keycode
        mapping = dpy.get_keyboard_mapping(low, high - low + 1)
        self._lent = {k: c for k, c in self._lent.items() if low <= c <= high and list(mapping[c - low][:2]) == [k, k]}
        return [low + i for i, keysyms in enumerate(mapping) if not any(keysyms)] + list(self._lent.values())


def _xdotool(*args: str) -> None:
    if shutil.which("xdotool") is None:
        raise UserError("xdotool is needed to type into this window; install it (sudo apt install xdotool).",
                        code="no_xdotool")
    done = subprocess.run(["xdotool", *args], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise UserError(f"xdotool could not send the keys ({done.stderr.strip() or done.returncode}).",
                        code="paste_failed")
