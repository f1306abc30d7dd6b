"""Value widgets that the mouse wheel changes only once they have the keyboard focus.

A stock spin box, combo box or slider takes every wheel turn that passes over it: scrolling a
settings page with the pointer resting on "Keep for (days)" cut it from 30 to 25 and deleted the
transcripts older than that at once, and one over Engine switched the engine and reloaded the
model. Here an unfocused widget passes the turn on to the page, which scrolls; click or tab into
the widget first to change it with the wheel.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QComboBox, QSlider, QSpinBox


class _FocusedWheel:
    """Mixin for a Qt value widget: the wheel changes it only while it has the focus, which the wheel itself
    no longer gives (StrongFocus instead of Qt's WheelFocus)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)

    def wheelEvent(self, event: QWheelEvent) -> None:
        if self.hasFocus():
            super().wheelEvent(event)
        else:
            event.ignore()  # to the parent: the page scrolls


class SpinBox(_FocusedWheel, QSpinBox):
    """A QSpinBox the wheel changes only when focused."""


class ComboBox(_FocusedWheel, QComboBox):
    """A QComboBox the wheel changes only when focused."""


class Slider(_FocusedWheel, QSlider):
    """A QSlider the wheel changes only when focused."""


__all__ = ["ComboBox", "Slider", "SpinBox"]
