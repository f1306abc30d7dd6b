"""Which desktop we run on decides how keys are caught and sent; this is the one place that knows."""

from __future__ import annotations

import os
import sys

# Said after the reason the desktop's GlobalShortcuts portal gave no hotkey (hotkeys.py)
WAYLAND_HOTKEY_HINT = (
    "Bind the command `python -m app toggle` (or `dictate toggle`) to a shortcut in your desktop's keyboard "
    "settings instead."
)


def display_server() -> str:
    """"x11", "wayland", "macos", "windows", or "none" (no graphical session)."""
    if sys.platform == "darwin":
        return "macos"
    if sys.platform == "win32":
        return "windows"
    if os.environ.get("XDG_SESSION_TYPE") == "wayland" or (os.environ.get("WAYLAND_DISPLAY") and not os.environ.get("DISPLAY")):
        return "wayland"
    return "x11" if os.environ.get("DISPLAY") else "none"
