"""Global hotkeys on X11 by an exclusive passive grab: the keys come to us, never to the focused window.

Listening alone (pynput's XRecord) lets the focused window have the keys too: a terminal got NUL
bytes from the auto-repeat of Ctrl+Space, an editor got spaces when Ctrl was let go before Space.
Here the combination is grabbed on the root window (XGrabKey): once it is pressed, the X server
sends every key event to this client until the grabbed key is released, in whatever order the
keys come up. What makes that work:

- One grab per Lock / NumLock / ScrollLock combination: X matches the modifier state exactly, so
  Ctrl+Shift+Space is not caught while NumLock is on unless Ctrl+Shift+NumLock+Space is grabbed too.
- A combination of modifiers only (Right Alt; Ctrl+Shift) grabs each of its keys with the other
  keys' modifier bits: whichever is pressed last starts it.
- The keyboard is grabbed synchronously: the press waits until we have looked at which keys are
  down (modifier bits do not say left or right), then it is kept (AsyncKeyboard) or handed to the
  focused window as if never grabbed (ReplayKeyboard).
- XKB detectable auto-repeat: a held key repeats as presses only, without a release between.
- The cancel key is grabbed only while recording (`arm_cancel`); at other times Esc belongs to the
  focused application.
- A combination another program has grabbed fails with BadAccess, reported as a sentence.

Every X request runs on this class's own thread and connection; other threads talk to it through
a queue and a wake-up pipe.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import select
import threading
import time
from typing import Callable

from Xlib import XK, X, error  # this module is imported on X11 only
from Xlib import display as xdisplay

from app.desktop.keys import Combo, is_modifier
from app.desktop.xkb import per_client_flags, use_extension
from app.errors import UserError

log = logging.getLogger(__name__)

_MODIFIER_KEYSYMS = {
    "ctrl": ("Control_L", "Control_R"), "ctrl_l": ("Control_L",), "ctrl_r": ("Control_R",),
    "shift": ("Shift_L", "Shift_R"), "shift_l": ("Shift_L",), "shift_r": ("Shift_R",),
    "alt": ("Alt_L", "Alt_R"), "alt_l": ("Alt_L",), "alt_r": ("Alt_R", "ISO_Level3_Shift"),
    "alt_gr": ("ISO_Level3_Shift",), "cmd": ("Super_L", "Super_R"), "cmd_l": ("Super_L",), "cmd_r": ("Super_R",),
}
_NAMED_KEYSYMS = {
    "space": "space", "enter": "Return", "tab": "Tab", "esc": "Escape", "backspace": "BackSpace",
    "delete": "Delete", "insert": "Insert", "home": "Home", "end": "End", "page_up": "Prior", "page_down": "Next",
    "up": "Up", "down": "Down", "left": "Left", "right": "Right", "caps_lock": "Caps_Lock", "num_lock": "Num_Lock",
    "scroll_lock": "Scroll_Lock", "pause": "Pause", "print_screen": "Print", "menu": "Menu",
    **{f"f{i}": f"F{i}" for i in range(1, 21)},
}
# keysym name -> the key name keys.py speaks, sides included (a grab sees which Ctrl is down)
_NAME_OF_KEYSYM = {**{n: k for k, n in _NAMED_KEYSYMS.items()},
                   "Control_L": "ctrl_l", "Control_R": "ctrl_r", "Shift_L": "shift_l", "Shift_R": "shift_r",
                   "Alt_L": "alt_l", "Alt_R": "alt_r", "ISO_Level3_Shift": "alt_gr", "Super_L": "cmd_l",
                   "Super_R": "cmd_r"}
_XKB_USE_CORE_KBD = 0x100
_XKB_DETECTABLE_AUTO_REPEAT = 1


def conflict_message(combo: Combo) -> str:
    return (f"{combo.label()} is already taken by another program, so it cannot start dictation. Choose another "
            "hotkey in Settings → Keys, or free that combination in the other program.")


class X11Grab:
    """Grabs a hotkey and a cancel key; `on_keys(held, at, grabbing)` gets the set of held keys after every
    key event it receives, and whether the keyboard is still grabbed (until the grabbed key is up, which
    may be after the combination has broken: Ctrl let go while Space is still down); `on_grabbed(problem)`
    the outcome of each later change of hotkey ("" when it is grabbed, else the sentence to show). Both
    are called on the grab's own thread."""

    def __init__(self, on_keys: Callable[[frozenset[str], float, bool], None],
                 on_grabbed: Callable[[str], None]) -> None:
        try:
            self._dpy = xdisplay.Display()
        except error.DisplayError as exc:
            raise UserError(f"Cannot reach the X display ({exc}); is DISPLAY set?", code="no_display") from exc
        self._on_keys, self._on_grabbed = on_keys, on_grabbed
        self._root = self._dpy.screen().root
        self._commands: queue.Queue = queue.Queue()
        self._wake_r, self._wake_w = os.pipe()
        self._combo: Combo | None = None
        self._cancel: Combo | None = None
        self._cancel_armed = False
        self._paused = False
        self._grabbed: dict[str, list[tuple[int, int]]] = {"hotkey": [], "cancel": []}
        self._active_key: int | None = None  # the keycode whose grab is active (until its release)
        self._held: set[str] = set()
        self._names: dict[int, str] = {}  # keysym -> key name, filled on first use
        self.detectable_repeat = self._set_detectable_auto_repeat()
        self._thread = threading.Thread(target=self._run, name="x11-hotkeys", daemon=True)

    # ---- other threads ------------------------------------------------------------------------
    def start(self, combo: Combo, cancel: Combo) -> str:
        """Grab `combo` and start the event thread; return "" or why the combination could not be grabbed
        (the thread runs anyway, so that a new hotkey from Settings can be grabbed)."""
        self._combo, self._cancel = combo, cancel
        problem = self._grab_hotkey()
        self._thread.start()
        return problem

    def set_combos(self, combo: Combo, cancel: Combo) -> None:
        self._send("combos", (combo, cancel))

    def pause(self, paused: bool) -> None:
        """Let every key through (Settings is capturing a new hotkey), or take the hotkey back."""
        self._send("pause", paused)

    def arm_cancel(self, armed: bool) -> None:
        """Grab the cancel key (while recording) or let it go back to the focused window."""
        self._send("cancel", armed)

    def grabbed_keys(self) -> frozenset[tuple[int, int]]:
        """The (keycode, modifier state) pairs grabbed now, hotkey and cancel key: a key press that matches
        one comes to us, not to the focused window (`input_activity.py` does not count it as typing)."""
        return frozenset(self._grabbed["hotkey"]) | frozenset(self._grabbed["cancel"])

    def stop(self) -> None:
        self._send("stop", None)
        self._thread.join(2)

    def _send(self, command: str, value) -> None:
        self._commands.put((command, value))
        os.write(self._wake_w, b"x")

    # ---- the event thread ---------------------------------------------------------------------
    def _run(self) -> None:
        fd = self._dpy.fileno()
        while True:
            while self._dpy.pending_events():
                event = self._dpy.next_event()
                try:
                    self._event(event)
                except Exception:  # never leave the keyboard frozen by a grab we did not answer
                    log.exception("hotkeys: could not handle a key event")
                    self._dpy.allow_events(X.AsyncKeyboard, X.CurrentTime)
                    self._dpy.flush()
            ready, _, _ = select.select([fd, self._wake_r], [], [], 1.0)
            if self._wake_r in ready:
                os.read(self._wake_r, 64)
            while not self._commands.empty():
                command, value = self._commands.get()
                if command == "stop":
                    self._ungrab("hotkey")
                    self._ungrab("cancel")
                    self._dpy.close()
                    return
                self._command(command, value)

    def _command(self, command: str, value) -> None:
        if command in ("combos", "pause"):
            if command == "combos":
                self._combo, self._cancel = value
            else:
                self._paused = value
            if self._paused:
                self._ungrab("hotkey")
                self._ungrab("cancel")
                self._dpy.sync()
                return
            problem = self._grab_hotkey()
            if self._cancel_armed:
                self._grab_cancel()
            self._on_grabbed(problem)
        elif command == "cancel" and value != self._cancel_armed:
            self._cancel_armed = value
            if value:
                self._grab_cancel()
            else:
                self._ungrab("cancel")
            self._dpy.flush()

    def _event(self, event) -> None:
        if event.type not in (X.KeyPress, X.KeyRelease):
            return
        now = time.monotonic()
        if event.type == X.KeyPress and self._active_key is None:
            # The press that activated a grab: the keyboard is frozen until we say what to do with it.
            held = self._keys_down()
            wanted = self._combo.matches(held) or (self._cancel_armed and self._cancel.matches(held))
            self._dpy.allow_events(X.AsyncKeyboard if wanted else X.ReplayKeyboard, X.CurrentTime)
            self._dpy.flush()
            if not wanted:
                return
            self._active_key, self._held = event.detail, held
        else:
            name = self._name(event.detail)
            if event.type == X.KeyPress:
                self._held.add(name)
            else:
                self._held.discard(name)
                if event.detail == self._active_key:
                    self._active_key = None  # the server ends the grab with this release
        self._on_keys(frozenset(self._held), now, self._active_key is not None)

    # ---- grabbing -----------------------------------------------------------------------------
    def _grab_hotkey(self) -> str:
        try:
            return self._grab("hotkey", self._combo) or ""
        except UserError as exc:  # a key this layout lacks, or two non-modifier keys
            return str(exc)

    def _grab_cancel(self) -> None:
        """The cancel key, while recording; when another program has it, the tray's Cancel still works."""
        try:
            self._grab("cancel", self._cancel)
        except UserError as exc:
            log.warning("hotkeys: the cancel key is not grabbed: %s", exc)

    def _grab(self, slot: str, combo: Combo) -> str | None:
        """Replace the grabs in `slot` by `combo`'s; a message when another program has the combination."""
        self._ungrab(slot)
        catch = error.CatchError(error.BadAccess)
        done = []
        for keycode, modifiers in self._grabs_for(combo):
            for locks in self._lock_variants():
                self._root.grab_key(keycode, modifiers | locks, False, X.GrabModeAsync, X.GrabModeSync,
                                    onerror=catch)
                done.append((keycode, modifiers | locks))
        self._dpy.sync()
        self._grabbed[slot] = done
        if catch.get_error() is not None:
            self._ungrab(slot)
            log.warning("hotkeys: %s is grabbed by another client", combo)
            return conflict_message(combo)
        log.info("hotkeys: grabbed %s (%d key/modifier pairs)", combo, len(done))
        return None

    def _ungrab(self, slot: str) -> None:
        for keycode, modifiers in self._grabbed[slot]:
            self._root.ungrab_key(keycode, modifiers)
        self._grabbed[slot] = []

    def _grabs_for(self, combo: Combo) -> list[tuple[int, int]]:
        """(keycode, modifier mask) pairs that together catch `combo` whichever key comes last."""
        keys = [p for p in combo.parts if not is_modifier(p)]
        modifiers = [p for p in combo.parts if is_modifier(p)]
        if len(keys) > 1:
            raise UserError(f"The hotkey {combo.label()} has more than one key besides its modifiers; on X11 it can "
                            "have one (such as Ctrl+Shift+Space). Choose another in Settings → Keys.",
                            code="bad_hotkey")
        if keys:
            return [(code, mask) for code in self._keycodes(keys[0]) for mask in self._masks(modifiers)]
        return [(code, mask) for part in modifiers for code in self._keycodes(part)
                for mask in self._masks([m for m in modifiers if m != part])]

    def _keycodes(self, part: str) -> list[int]:
        if part in _MODIFIER_KEYSYMS:
            keysyms = [XK.string_to_keysym(name) for name in _MODIFIER_KEYSYMS[part]]
        elif part in _NAMED_KEYSYMS:
            keysyms = [XK.string_to_keysym(_NAMED_KEYSYMS[part])]
        else:  # a character: Latin-1 keysyms equal the code point, the rest are offset (X11 Unicode keysyms)
            keysyms = [ord(part) if ord(part) < 0x100 else 0x01000000 | ord(part)]
        codes = sorted({code for keysym in keysyms for code, _ in self._dpy.keysym_to_keycodes(keysym)})
        if not codes:
            raise UserError(f"The key '{part}' of the hotkey is not on this keyboard layout; choose another hotkey "
                            "in Settings → Keys.", code="bad_hotkey")
        return codes

    def _masks(self, parts: list[str]) -> set[int]:
        """The X modifier states these modifier keys can make (Ctrl -> ControlMask; Right Alt -> Mod1, or
        Mod5 where it is AltGr): one choice per part, so one grab per way of holding them."""
        mapping = self._dpy.get_modifier_mapping()
        choices = []
        for part in parts:
            codes = set(self._keycodes(part))
            choices.append({1 << bit for bit, keycodes in enumerate(mapping) if codes & set(keycodes)} or {0})
        return {sum(bits) for bits in itertools.product(*choices)}

    def _lock_variants(self) -> list[int]:
        """Every combination of CapsLock, NumLock and ScrollLock, which X counts as modifiers."""
        mapping = self._dpy.get_modifier_mapping()
        locks = {X.LockMask}
        for name in ("Num_Lock", "Scroll_Lock"):
            codes = {code for code, _ in self._dpy.keysym_to_keycodes(XK.string_to_keysym(name))}
            locks |= {1 << bit for bit, keycodes in enumerate(mapping) if codes & set(keycodes)}
        locks = sorted(locks)
        return sorted({sum(c) for n in range(len(locks) + 1) for c in itertools.combinations(locks, n)})

    # ---- keys ---------------------------------------------------------------------------------
    def _keys_down(self) -> set[str]:
        keymap = self._dpy.query_keymap()  # 32 bytes, one bit per keycode
        return {self._name(code) for code in range(8, 256) if keymap[code // 8] & (1 << (code % 8))}

    def _name(self, keycode: int) -> str:
        if not self._names:
            self._names = {XK.string_to_keysym(x_name): name for x_name, name in _NAME_OF_KEYSYM.items()}
        keysym = self._dpy.keycode_to_keysym(keycode, 0)
        if keysym in self._names:
            return self._names[keysym]
        return chr(keysym).lower() if 0x20 < keysym < 0x100 else f"keycode{keycode}"

    def _set_detectable_auto_repeat(self) -> bool:
        """Ask XKB to send a held key's repeats as presses only (no fake release between them)."""
        if not use_extension(self._dpy):
            return False
        value = per_client_flags(self._dpy, device=_XKB_USE_CORE_KBD, change=_XKB_DETECTABLE_AUTO_REPEAT,
                                 value=_XKB_DETECTABLE_AUTO_REPEAT)
        return bool(value & _XKB_DETECTABLE_AUTO_REPEAT)
