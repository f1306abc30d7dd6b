"""Sending the paste keystroke or typing text, per desktop. X11 lives in `x11.py`.

- Wayland: wtype (wlroots compositors) or ydotool (any compositor, needs its daemon); the
  compositor gives no portable way to learn the focused window, so no terminal detection there.
- macOS and Windows: pynput's controller, by key code (Cmd+V is key code 9 on macOS and VK 0x56 on
  Windows), so the paste works whatever the keyboard layout.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Protocol

from app.errors import UserError

_LINUX_KEYCODES = {"ctrl": 29, "shift": 42, "alt": 56, "insert": 110, "v": 47}  # evdev codes, for ydotool


class KeyInjector(Protocol):
    def warm_up(self) -> None:
        """Do slow one-time set-up now (any thread), not during the first paste."""

    def window_class(self) -> str | None: ...

    def focused_window(self) -> int:
        """The focused window's id where the platform tells (X11), else 0."""

    def send(self, keys: str) -> None: ...

    def type_text(self, text: str) -> None: ...


class WaylandKeys:
    """wtype when present, else ydotool; a sentence naming both when neither is installed."""

    def __init__(self) -> None:
        self.tool = next((t for t in ("wtype", "ydotool") if shutil.which(t)), None)

    def warm_up(self) -> None:
        pass

    def window_class(self) -> str | None:
        return None

    def focused_window(self) -> int:
        return 0

    def _run(self, args: list[str]) -> None:
        if self.tool is None:
            raise UserError("To paste on Wayland, install wtype or ydotool (and wl-clipboard), e.g. "
                            "sudo apt install wtype wl-clipboard; until then the text is left on the clipboard.",
                            code="no_injector")
        done = subprocess.run([self.tool, *args], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise UserError(f"{self.tool} could not send the keys ({done.stderr.strip() or done.returncode}).",
                            code="paste_failed")

    def send(self, keys: str) -> None:
        parts = keys.split("+")
        *mods, key = parts
        if self.tool == "wtype":
            self._run([*(a for m in mods for a in ("-M", m)), "-k", key if key != "insert" else "Insert",
                       *(a for m in reversed(mods) for a in ("-m", m))])
        else:
            codes = [_LINUX_KEYCODES[p] for p in parts]
            self._run(["key", *(f"{c}:1" for c in codes), *(f"{c}:0" for c in reversed(codes))])

    def type_text(self, text: str) -> None:
        self._run(["--", text] if self.tool == "wtype" else ["type", "--", text])


class PynputKeys:
    """macOS and Windows: modifiers are released first, then the combo is sent by key code."""

    _VK = {"darwin": {"v": 9, "insert": 114}, "win32": {"v": 0x56, "insert": 0x2D}}

    def __init__(self, platform: str) -> None:
        from pynput.keyboard import Controller

        self._keyboard = Controller()
        self._vk = self._VK[platform]

    def warm_up(self) -> None:
        pass

    def window_class(self) -> str | None:
        return None

    def focused_window(self) -> int:
        return 0

    def send(self, keys: str) -> None:
        from pynput.keyboard import Key, KeyCode

        *mods, key = keys.split("+")
        for held in (Key.shift, Key.ctrl, Key.alt, Key.cmd):
            self._keyboard.release(held)
        modifiers = [getattr(Key, m) for m in mods]
        for m in modifiers:
            self._keyboard.press(m)
        code = KeyCode.from_vk(self._vk[key])
        self._keyboard.press(code)
        self._keyboard.release(code)
        for m in reversed(modifiers):
            self._keyboard.release(m)

    def type_text(self, text: str) -> None:
        self._keyboard.type(text)


def make_injector(server: str) -> KeyInjector:
    if server == "x11":
        from app.desktop.x11 import X11Keys

        return X11Keys()
    if server == "wayland":
        return WaylandKeys()
    if server in ("macos", "windows"):
        return PynputKeys("darwin" if server == "macos" else "win32")
    raise UserError("No graphical session was found, so text cannot be pasted; start the app from your desktop.",
                    code="no_display")
