"""The speech server's token in the settings window: typed in a hidden field, kept by `token_store`.

It is not a schema field on purpose: settings.json must never hold it (the file is shown in the
tray, copied aside when damaged and pasted into bug reports). The field shows whether a token is
stored and where, never the token itself.
"""

from __future__ import annotations

from PySide6.QtWidgets import QHBoxLayout, QLabel, QLineEdit, QPushButton, QVBoxLayout, QWidget

from app.server.token_store import load_token, save_token


class ServerTokenEdit(QWidget):
    """A password field and a Save button; the line below says what is stored."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.field = QLineEdit()
        self.field.setEchoMode(QLineEdit.EchoMode.Password)
        self.field.setPlaceholderText("Speech server token (engine server)")
        self.field.returnPressed.connect(self.save)
        self.save_button = QPushButton("Save token")
        self.save_button.clicked.connect(self.save)
        self.status = QLabel()
        self.status.setWordWrap(True)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.field, 1)
        row.addWidget(self.save_button)
        column = QVBoxLayout(self)
        column.setContentsMargins(0, 0, 0, 0)
        column.addLayout(row)
        column.addWidget(self.status)
        self.status.setText("A token is stored." if load_token() else "No token is stored (a server on this "
                            "computer needs none).")

    def save(self) -> None:
        """Store what was typed (empty: forget the token) and clear the field."""
        token = self.field.text().strip()
        where = save_token(token)
        self.field.clear()
        self.status.setText(f"The token is kept in {where}; the next dictation uses it." if token
                            else "The token is forgotten.")
