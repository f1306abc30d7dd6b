"""The running instance's end of the remote channel (see `remote.py` for the client and format)."""

from __future__ import annotations

import json
from typing import Callable

from PySide6.QtCore import QObject
from PySide6.QtNetwork import QLocalServer, QLocalSocket

from app.desktop.paths import instance_address
from app.desktop.remote import COMMANDS, request

Handler = Callable[[str], dict]


class RemoteServer(QObject):
    """Answers commands for the running instance; `handler(command)` returns the reply's fields."""

    def __init__(self, handler: Handler, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._handler = handler
        self._server = QLocalServer(self)
        self._server.setSocketOptions(QLocalServer.SocketOption.UserAccessOption)
        self._server.newConnection.connect(self._accept)

    def listen(self) -> bool:
        """Claim the instance address; False when another instance already answers there."""
        if request("status", timeout_s=1.0) is not None:
            return False
        address = instance_address()
        QLocalServer.removeServer(address)  # a socket file left behind by a crashed instance
        return self._server.listen(address)

    def close(self) -> None:
        self._server.close()

    def _accept(self) -> None:
        while self._server.hasPendingConnections():
            sock = self._server.nextPendingConnection()
            sock.readyRead.connect(lambda s=sock: self._read(s))
            sock.disconnected.connect(sock.deleteLater)

    def _read(self, sock: QLocalSocket) -> None:
        if not sock.canReadLine():
            return
        try:
            command = json.loads(bytes(sock.readLine().data()))["command"]
            if command not in COMMANDS:
                raise ValueError(command)
            reply = {"ok": True, **self._handler(command)}
        except (ValueError, KeyError, TypeError):
            reply = {"ok": False, "message": f"Unknown command; use one of: {', '.join(COMMANDS)}."}
        sock.write((json.dumps(reply) + "\n").encode())
        sock.flush()
