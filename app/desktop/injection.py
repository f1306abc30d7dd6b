"""Sending the paste keystroke or typing text, per desktop. X11 lives in `x11.py`.

- Wayland: wtype (virtual-keyboard protocol: wlroots compositors) or ydotool (any compositor,
  needs its daemon), else the text stays on the clipboard (`WaylandKeys`); the focused window is
  known only where the compositor tells (sway, Hyprland: `wayland_windows.py`).
- macOS and Windows: pynput's controller, by key code (Cmd+V is key code 9 on macOS and VK 0x56 on
  Windows), so the paste works whatever the keyboard layout.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
from typing import Protocol

from app.desktop.wayland_windows import focused_app_id
from app.errors import UserError

log = logging.getLogger(__name__)

# Each wtype run is a new virtual keyboard with a keymap of its own; a client that gets the keymap
# and the first key together drops that key (Qt did, in the sway tests: "hello" arrived as "ello",
# Ctrl+V as nothing). Waiting 50 ms after the keymap lets the client take it first.
_WTYPE_SETTLE = ("-s", "50")
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
    """The paste keystroke on Wayland, by the first mechanism that works here without root:

    1. wtype, where the compositor offers clients the virtual-keyboard protocol (wlroots: sway,
       Hyprland); probed once by a no-op `wtype -s 1` (sleep 1 ms), which fails at once without it:
       GNOME, and KDE's KWin 5.27 (tried here: "Compositor does not support the virtual keyboard protocol").
    2. ydotool, only when its daemon's socket answers (ydotoold writes to /dev/uinput, which needs
       root or a udev rule; without the daemon the client would need root itself).
    3. none: the Paster leaves the transcript on the clipboard and tells the user, in one line.

    `mechanism` names the choice ("wtype", "ydotool" or "clipboard") for the log and the settings
    window; `reason` says why the better ones were not taken.
    """

    def __init__(self) -> None:
        self.tool: str | None = None
        self.reason = ""
        self._chosen = False

    @property
    def mechanism(self) -> str:
        self._choose()
        return self.tool or "clipboard"

    def _choose(self) -> None:
        if self._chosen:
            return
        self._chosen = True
        reasons = []
        if not shutil.which("wtype"):
            reasons.append("wtype is not installed")
        else:
            probe = subprocess.run(["wtype", "-s", "1"], capture_output=True, text=True, timeout=10)
            if probe.returncode == 0:
                self.tool = "wtype"
            else:
                reasons.append(f"wtype cannot send keys here: {probe.stderr.strip() or probe.returncode}")
        if self.tool is None:
            if not shutil.which("ydotool"):
                reasons.append("ydotool is not installed")
            elif ydotool_socket() is None:
                reasons.append("the ydotool daemon (ydotoold) is not running")
            else:
                self.tool = "ydotool"
        self.reason = "; ".join(reasons)
        if self.tool:
            log.info("paste keys on Wayland: %s%s", self.tool, f" ({self.reason})" if self.reason else "")
        else:
            log.warning("paste keys on Wayland: none (%s); transcripts are left on the clipboard", self.reason)

    def warm_up(self) -> None:
        self._choose()

    def window_class(self) -> str | None:
        return focused_app_id()

    def focused_window(self) -> int:
        return 0

    def _run(self, args: list[str]) -> None:
        self._choose()
        if self.tool is None:
            raise UserError(f"Nothing here can send the paste keystroke on Wayland ({self.reason}); install wtype "
                            "(sway, Hyprland) or start the ydotool daemon (GNOME, KDE).", code="no_injector")
        done = subprocess.run([self.tool, *args], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise UserError(f"{self.tool} could not send the keys ({done.stderr.strip() or done.returncode}).",
                            code="paste_failed")

    def send(self, keys: str) -> None:
        parts = keys.split("+")
        *mods, key = parts
        self._choose()
        if self.tool == "wtype":
            key = "Insert" if key == "insert" else key
            self._run([*_WTYPE_SETTLE, *(a for m in mods for a in ("-M", m)), "-k", key,
                       *(a for m in reversed(mods) for a in ("-m", m))])
        else:
            codes = [_LINUX_KEYCODES[p] for p in parts]
            self._run(["key", *(f"{c}:1" for c in codes), *(f"{c}:0" for c in reversed(codes))])

    def type_text(self, text: str) -> None:
        self._choose()
        self._run([*_WTYPE_SETTLE, "--", text] if self.tool == "wtype" else ["type", "--", text])


def ydotool_socket() -> str | None:
    """The ydotool daemon's socket when one answers: $YDOTOOL_SOCKET, else where ydotoold 1.x and
    Debian's 0.1.8 put it. A socket file left by a dead daemon refuses the connection: not counted."""
    candidates = [os.environ.get("YDOTOOL_SOCKET"), f"/run/user/{os.getuid()}/.ydotool_socket",
                  "/tmp/.ydotool_socket"]
    for path in filter(None, candidates):
        if not os.path.exists(path):
            continue
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):  # ydotoold 1.x: datagrams; 0.1.8: a stream
            try:
                with socket.socket(socket.AF_UNIX, kind) as sock:
                    sock.settimeout(1)
                    sock.connect(path)
                return path
            except OSError:
                continue
    return None


class PynputKeys:
    """macOS and Windows: modifiers are released first, then the combo is sent by key code."""

    mechanism = "pynput"  # for the settings window

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
