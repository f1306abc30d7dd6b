"""The model's speed-up progress in the settings window: a line and a progress bar while pieces run.

After a model loads, the worker spends seconds (on a cold compile, minutes) making it faster on this
machine: CUDA graphs per prompt shape, compiled layers. Dictation works all the while (on the slower
eager path), so this is information, never a wait: the user sees why the first dictations may be
slower and when that ends.
"""

from __future__ import annotations

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QLabel, QProgressBar, QVBoxLayout, QWidget


def preparation_text(preparation: dict, device: str | None = None) -> str:
    """One sentence for the worker's latest `preparing` state (`SpeechClient.preparation`); "" for none."""
    done, total = int(preparation.get("done", 0)), int(preparation.get("total", 0))
    if total <= 0:
        return ""
    where = "this GPU" if str(device or "").startswith("cuda") else "this computer"
    if preparation.get("error"):
        return (f"Speed-ups stopped after {done} of {total} ({preparation['error']}); dictation works as it is, "
                "only slower.")
    if done < total:
        label = preparation.get("label")
        now = f" (now: {label})" if label else ""
        return f"Getting faster on {where}: {done} of {total} done{now}. Dictation works meanwhile."
    return f"Ready: all speed-ups prepared in {float(preparation.get('ms', 0.0)) / 1000.0:.1f} s."


class PreparationStatus(QWidget):
    """Hidden until the worker reports pieces; then the sentence, and a bar while pieces remain."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("preparationStatus")
        self.line = QLabel()
        self.line.setObjectName("hint")
        self.line.setWordWrap(True)
        self.bar = QProgressBar()
        self.bar.setTextVisible(False)
        self.bar.setMaximumHeight(8)
        column = QVBoxLayout(self)
        column.setContentsMargins(0, 0, 0, 0)
        column.addWidget(self.line)
        column.addWidget(self.bar)
        self.hide()

    def show_preparation(self, preparation: dict, device: str | None = None) -> None:
        """Show `preparation` (the client's `preparation` property); hide when there is nothing to say."""
        text = preparation_text(preparation, device)
        self.line.setText(text)
        done, total = int(preparation.get("done", 0)), int(preparation.get("total", 0))
        running = bool(text) and done < total and not preparation.get("error")
        self.bar.setRange(0, max(total, 1))
        self.bar.setValue(done)
        visible = (self.isVisibleTo(self.parentWidget()), self.bar.isVisibleTo(self)) if self.parentWidget() else None
        self.bar.setVisible(running)
        self.setVisible(bool(text))
        if visible is not None and visible != (self.isVisibleTo(self.parentWidget()), self.bar.isVisibleTo(self)):
            QTimer.singleShot(0, self, self._relayout_page)

    def _relayout_page(self) -> None:
        """Lay the page out again once this row has its new height. Without it the form page (word-wrapped
        hints, in a scroll area) keeps a height measured before the row appeared and squeezes its other
        rows until the window is resized."""
        page = self.parentWidget()
        if page is not None and page.layout() is not None:
            page.layout().invalidate()
            page.layout().activate()
