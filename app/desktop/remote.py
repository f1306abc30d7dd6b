"""The remote commands: `python -m app toggle|start|stop|cancel` reach the running app.

This is the client half, kept to the standard library so the command returns in about a tenth of
a second: on Wayland it *is* the hotkey (bound in the desktop's shortcut settings), and a slow
start would cut off the first word. The server half is `remote_server.py`. One JSON line goes in
({"command": "toggle"}), one JSON line comes back ({"ok": true, ...}).
"""

from __future__ import annotations

import json
import socket
import sys

from app.desktop.paths import instance_address

COMMANDS = ("toggle", "start", "stop", "cancel", "show", "status")


def request(command: str, timeout_s: float = 2.0, address: str | None = None) -> dict | None:
    """Send one command to the running app (at `address`, default: this user's instance); its reply,
    or None when no instance is listening."""
    line = (json.dumps({"command": command}) + "\n").encode()
    address = address or instance_address()
    if sys.platform == "win32":
        return _request_pipe(line, timeout_s, address)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout_s)
            sock.connect(address)
            sock.sendall(line)
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError:  # no socket file, a stale one (connection refused), or no answer in time
        return None
    return _parse(data)


def _request_pipe(line: bytes, timeout_s: float, address: str) -> dict | None:
    """Windows: QLocalServer listens on a named pipe, which QLocalSocket speaks."""
    from PySide6.QtNetwork import QLocalSocket

    sock = QLocalSocket()
    sock.connectToServer(address)
    if not sock.waitForConnected(int(timeout_s * 1000)):
        return None
    sock.write(line)
    sock.flush()
    data = b""
    while not data.endswith(b"\n") and sock.waitForReadyRead(int(timeout_s * 1000)):
        data += bytes(sock.readAll().data())
    sock.disconnectFromServer()
    return _parse(data)


def _parse(data: bytes) -> dict:
    try:
        return json.loads(data)
    except ValueError:
        return {"ok": False, "message": "The running app sent an unreadable reply; restart it."}


def send_command(name: str) -> int:
    """The CLI's remote commands: exit status 0 when the running app took the command."""
    reply = request(name)
    if reply is None:
        print("The app is not running: start it first with `python -m app` (or `dictate`).", file=sys.stderr)
        return 1
    if not reply.get("ok"):
        print(reply.get("message", "The app refused the command."), file=sys.stderr)
        return 1
    return 0
