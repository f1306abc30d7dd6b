"""An input level bar: what the microphone hears, at a glance.

Levels arrive in dBFS (what the recorder measures) and are shown on a -60..0 dB scale, the range in
which speech moves; a peak marker falls back slowly so short syllables stay visible.
"""

from __future__ import annotations

from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QColor, QLinearGradient, QPainter, QPainterPath
from PySide6.QtWidgets import QSizePolicy, QWidget

FLOOR_DB = -60.0
_PEAK_FALL = 0.02  # of the full scale, per update


def level_from_db(db: float) -> float:
    """dBFS -> 0..1 on the meter's scale (silence and anything below -60 dB is 0)."""
    if db != db:  # NaN: nothing measured yet
        return 0.0
    return min(1.0, max(0.0, (db - FLOOR_DB) / -FLOOR_DB))


class LevelMeter(QWidget):
    """`set_level(0..1)`; draws a rounded bar, green to amber to red, with a falling peak marker."""

    def __init__(self, parent: QWidget | None = None, *, dark: bool = False) -> None:
        super().__init__(parent)
        self._level = 0.0
        self._peak = 0.0
        self._dark = dark
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.setAccessibleName("Input level")

    def sizeHint(self) -> QSize:
        return QSize(160, 8)

    def minimumSizeHint(self) -> QSize:
        return QSize(40, 6)

    @property
    def level(self) -> float:
        return self._level

    def set_level(self, level: float) -> None:
        level = min(1.0, max(0.0, float(level)))
        self._level = level
        self._peak = max(level, self._peak - _PEAK_FALL)
        self.update()

    def paintEvent(self, event) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        rect = QRectF(self.rect()).adjusted(0.5, 0.5, -0.5, -0.5)
        radius = rect.height() / 2
        track = QColor(255, 255, 255, 38) if self._dark else self.palette().mid().color()
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(track)
        p.drawRoundedRect(rect, radius, radius)
        if self._level > 0:
            clip = QPainterPath()
            clip.addRoundedRect(rect, radius, radius)
            p.setClipPath(clip)
            gradient = QLinearGradient(rect.topLeft(), rect.topRight())
            gradient.setColorAt(0.0, QColor("#34c759"))
            gradient.setColorAt(0.7, QColor("#a8d94a"))
            gradient.setColorAt(0.85, QColor("#ffb340"))
            gradient.setColorAt(1.0, QColor("#ff453a"))
            p.setBrush(gradient)
            p.drawRoundedRect(QRectF(rect.left(), rect.top(), max(rect.height(), rect.width() * self._level),
                                     rect.height()), radius, radius)
        if self._peak > 0.02:
            x = rect.left() + rect.width() * self._peak
            p.setBrush(QColor(255, 255, 255, 200) if self._dark else self.palette().text().color())
            p.drawRect(QRectF(min(x, rect.right() - 2), rect.top(), 2, rect.height()))
        p.end()
