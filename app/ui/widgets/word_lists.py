"""Editors for the speaker's words: the vocabulary (one entry per line) and the replacements table.

Both report their whole value through one signal when the user is done with an edit (focus leaves,
or a cell is committed), and can be filled from the settings without echoing it back. A malformed
replacement row is not dropped here: the table sends it as it is, the schema refuses it with a
sentence the settings window shows beside the table, and the row stays for the user to fix.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QFocusEvent
from PySide6.QtWidgets import (QAbstractItemView, QHBoxLayout, QHeaderView, QPlainTextEdit, QPushButton,
                               QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)


class WordListEdit(QPlainTextEdit):
    """One word or phrase per line; `entries_changed(list)` when focus leaves after an edit, or after a
    second without typing (so closing the window right after typing loses nothing)."""

    entries_changed = Signal(list)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setPlaceholderText("Kubernetes\nSiobhan\nPostgreSQL")
        self.setAccessibleName("Vocabulary, one entry per line")
        self.setTabChangesFocus(True)
        self.setMinimumHeight(110)
        self._shown: list[str] = []
        self._idle = QTimer(self, singleShot=True, interval=1000, timeout=self.commit)
        self.textChanged.connect(self._idle.start)

    def entries(self) -> list[str]:
        return [line.strip() for line in self.toPlainText().splitlines() if line.strip()]

    def set_entries(self, entries) -> None:
        self._shown = list(entries)
        if self._shown == self.entries():  # our own edit coming back: keep the cursor where the user types
            return
        self.blockSignals(True)
        try:
            self.setPlainText("\n".join(self._shown))
        finally:
            self.blockSignals(False)

    def focusOutEvent(self, event: QFocusEvent) -> None:
        super().focusOutEvent(event)
        self.commit()

    def commit(self) -> None:
        """Report the entries if they differ from what was last shown (the settings' value)."""
        if self.entries() != self._shown:
            self.entries_changed.emit(self.entries())


class ReplacementsTable(QWidget):
    """Two columns, "You say" and "It writes"; `pairs_changed(list of [spoken, written])` after each edit."""

    pairs_changed = Signal(list)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.table = QTableWidget(0, 2)
        self.table.setHorizontalHeaderLabels(["You say", "It writes"])
        self.table.setAccessibleName("Replacements")
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setVisible(True)  # row numbers: an error names "Replacement 3"
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setMinimumHeight(150)
        self.add_button = QPushButton("Add")
        self.remove_button = QPushButton("Remove")
        self.remove_button.setToolTip("Remove the selected rows.")
        buttons = QHBoxLayout()
        buttons.addWidget(self.add_button)
        buttons.addWidget(self.remove_button)
        buttons.addStretch(1)
        column = QVBoxLayout(self)
        column.setContentsMargins(0, 0, 0, 0)
        column.addWidget(self.table)
        column.addLayout(buttons)
        self.setFocusProxy(self.table)
        self.table.itemChanged.connect(self._edited)
        self.add_button.clicked.connect(self.add_row)
        self.remove_button.clicked.connect(self.remove_selected)

    def pairs(self) -> list[list[str]]:
        """Every row as typed, empty ones too: the schema skips an empty row but counts it, so the row its
        error names ("Replacement 2") is the row numbered 2 here (a row with only one side: the schema says why)."""
        return [[self.table.item(row, col).text() if self.table.item(row, col) else "" for col in (0, 1)]
                for row in range(self.table.rowCount())]

    def set_pairs(self, pairs) -> None:
        filled = [cells for cells in self.pairs() if any(cell.strip() for cell in cells)]
        if [list(p) for p in pairs] == filled:  # our own edit coming back: leave the open cell alone
            return
        self.table.blockSignals(True)
        try:
            self.table.setRowCount(0)
            for spoken, written in pairs:
                self._append(spoken, written)
        finally:
            self.table.blockSignals(False)

    def add_row(self) -> None:
        """An empty row, with its first cell open for typing; it is saved once it holds something."""
        self.table.blockSignals(True)
        try:
            self._append("", "")
        finally:
            self.table.blockSignals(False)
        row = self.table.rowCount() - 1
        self.table.setCurrentCell(row, 0)
        self.table.editItem(self.table.item(row, 0))

    def remove_selected(self) -> None:
        rows = sorted({index.row() for index in self.table.selectionModel().selectedRows()}, reverse=True)
        for row in rows:
            self.table.removeRow(row)
        if rows:
            self.pairs_changed.emit(self.pairs())

    def _append(self, spoken: str, written: str) -> None:
        row = self.table.rowCount()
        self.table.insertRow(row)
        for col, text in enumerate((spoken, written)):
            item = QTableWidgetItem(text)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable)
            self.table.setItem(row, col, item)

    def _edited(self, _item: QTableWidgetItem) -> None:
        self.pairs_changed.emit(self.pairs())
