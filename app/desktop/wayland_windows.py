"""Which app has the focus on Wayland, where the compositor tells: sway and Hyprland.

Wayland gives ordinary clients no way to learn the focused window, but a terminal needs
Ctrl+Shift+V where everything else takes Ctrl+V: a plain Ctrl+V reaches the shell as ^V and the
paste is lost. sway (i3's IPC: a socket named by $SWAYSOCK) and Hyprland (`hyprctl activewindow`)
answer the question; GNOME and KDE do not, and there the paste keystroke setting decides.
The answer is the app_id (Hyprland: class), which for terminals matches paste.TERMINAL_CLASSES.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import struct
import subprocess

log = logging.getLogger(__name__)

_I3_MAGIC = b"i3-ipc"
_GET_TREE = 4


def focused_app_id() -> str | None:
    """The focused window's app_id on sway or Hyprland; None elsewhere or when it cannot be learned."""
    try:
        if os.environ.get("SWAYSOCK"):
            return _sway_focused(os.environ["SWAYSOCK"])
        if os.environ.get("HYPRLAND_INSTANCE_SIGNATURE") and shutil.which("hyprctl"):
            done = subprocess.run(["hyprctl", "activewindow", "-j"], capture_output=True, text=True, timeout=2)
            return json.loads(done.stdout).get("class") or None if done.returncode == 0 else None
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        log.info("wayland: could not ask the compositor for the focused window: %s", exc)
    return None


def _sway_focused(path: str) -> str | None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        sock.connect(path)
        sock.sendall(_I3_MAGIC + struct.pack("=II", 0, _GET_TREE))
        header = _read(sock, len(_I3_MAGIC) + 8)
        length, _ = struct.unpack("=II", header[len(_I3_MAGIC):])
        tree = json.loads(_read(sock, length))
    stack = [tree]
    while stack:
        node = stack.pop()
        if node.get("focused"):
            # app_id for Wayland clients; Xwayland windows have window_properties.class instead
            return node.get("app_id") or (node.get("window_properties") or {}).get("class")
        stack.extend(node.get("nodes", []) + node.get("floating_nodes", []))
    return None


def _read(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise OSError("sway closed its IPC socket mid-reply")
        data += chunk
    return data
