"""The quality slider: five named stops mapped to denoising steps, each with its latency on this machine.

The diffusion model's quality is the number of denoising steps, but "12 steps" means nothing to
most people, so the slider speaks in stops (Fastest ... Best) and shows under each what it costs
here, measured from real dictations (see `app/latency.py`). A spin box beside it keeps the exact
number reachable: any value from 1 to 48 is kept as it is, and the slider then sits on the
nearest stop.
"""

from __future__ import annotations

from PySide6.QtCore import QRect, QSize, Qt, Signal
from PySide6.QtGui import QFont, QPainter
from PySide6.QtWidgets import (QHBoxLayout, QLabel, QSlider, QStyle, QStyleOptionSlider, QVBoxLayout,
                               QWidget)

from app.latency import Cost, format_seconds
from app.ui.widgets.wheel import Slider, SpinBox

STOPS: tuple[tuple[str, int], ...] = (("Fastest", 4), ("Fast", 8), ("Balanced", 12), ("Accurate", 16), ("Best", 32))
MIN_STEPS, MAX_STEPS = 1, 48


def steps_for_position(position: int) -> int:
    """The denoising steps of slider stop `position` (0 = Fastest)."""
    return STOPS[max(0, min(len(STOPS) - 1, position))][1]


def position_for_steps(steps: int) -> int:
    """The stop nearest to `steps` (the faster one on a tie), for values set outside the slider."""
    return min(range(len(STOPS)), key=lambda i: (abs(STOPS[i][1] - steps), i))


class _StopLabels(QWidget):
    """The names, steps and latencies under the slider, each centred under its tick."""

    def __init__(self, slider: QSlider) -> None:
        super().__init__()
        self._slider = slider
        self._latencies: list[str] = []
        self.setFocusPolicy(Qt.FocusPolicy.NoFocus)

    def set_latencies(self, texts: list[str]) -> None:
        self._latencies = texts
        self.updateGeometry()
        self.update()

    def sizeHint(self) -> QSize:
        rows = 3 if self._latencies else 2
        return QSize(360, self.fontMetrics().height() * rows + 4)

    def _ticks(self) -> tuple[list[int], int]:
        """x of each tick in this widget's coordinates, and the handle's width."""
        opt = QStyleOptionSlider()
        self._slider.initStyleOption(opt)
        handle = self._slider.style().subControlRect(QStyle.ComplexControl.CC_Slider, opt,
                                                     QStyle.SubControl.SC_SliderHandle, self._slider)
        span = self._slider.width() - handle.width()
        offset = self._slider.x() - self.x()
        return [offset + handle.width() // 2 + QStyle.sliderPositionFromValue(0, len(STOPS) - 1, i, span)
                for i in range(len(STOPS))], handle.width()

    def paintEvent(self, event) -> None:
        p = QPainter(self)
        line = self.fontMetrics().height()
        width = max(60, self.width() // len(STOPS))
        current = self._slider.value()
        bold = QFont(self.font())
        bold.setBold(True)
        ticks, handle = self._ticks()
        for i, tick in enumerate(ticks):
            name, steps = STOPS[i]
            # The outer stops hang inwards from their ticks, so that they line up with the slider's ends.
            if i == 0:
                left, align = tick - handle // 2, Qt.AlignmentFlag.AlignLeft
            elif i == len(STOPS) - 1:
                left, align = tick + handle // 2 - width, Qt.AlignmentFlag.AlignRight
            else:
                left, align = tick - width // 2, Qt.AlignmentFlag.AlignHCenter
            align |= Qt.AlignmentFlag.AlignVCenter
            rows = [(name, bold if i == current else self.font(), self.palette().text().color()),
                    (f"{steps} steps", self.font(), self.palette().placeholderText().color())]
            if self._latencies:
                rows.append((self._latencies[i], self.font(), self.palette().placeholderText().color()))
            for row, (text, font, colour) in enumerate(rows):
                p.setFont(font)
                p.setPen(colour)
                p.drawText(QRect(left, row * line, width, line), align, text)
        p.end()


class QualitySlider(QWidget):
    """Emits `value_changed(steps)`; `set_cost()` shows measured latencies under the stops."""

    value_changed = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.slider = Slider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, len(STOPS) - 1)
        self.slider.setPageStep(1)
        self.slider.setTickPosition(QSlider.TickPosition.TicksBelow)
        self.slider.setTickInterval(1)
        self.slider.setAccessibleName("Quality")
        self.spin = SpinBox()
        self.spin.setRange(MIN_STEPS, MAX_STEPS)
        self.spin.setSuffix(" steps")
        self.spin.setAccessibleName("Denoising steps")
        self.spin.setToolTip("The exact number of denoising steps, 1 to 48.")
        self.labels = _StopLabels(self.slider)
        self.note = QLabel()
        self.note.setWordWrap(True)
        self.note.setObjectName("hint")
        top = QHBoxLayout()
        top.addWidget(self.slider, 1)
        top.addWidget(self.spin)
        column = QVBoxLayout(self)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(2)
        column.addLayout(top)
        column.addWidget(self.labels)
        column.addWidget(self.note)
        self.setFocusProxy(self.slider)
        self._cost: Cost | None = None
        self.slider.valueChanged.connect(self._slider_moved)
        self.spin.valueChanged.connect(self._spin_changed)
        self.set_steps(STOPS[1][1])
        self.set_cost(None)

    def steps(self) -> int:
        return self.spin.value()

    def set_steps(self, steps: int) -> None:
        """Show `steps` without emitting `value_changed`."""
        for widget in (self.slider, self.spin):
            widget.blockSignals(True)
        self.spin.setValue(steps)
        self.slider.setValue(position_for_steps(steps))
        for widget in (self.slider, self.spin):
            widget.blockSignals(False)
        self.labels.update()

    def set_cost(self, cost: Cost | None, *, applies: bool = True) -> None:
        """The measured cost for the current model, or None before its first dictation.

        `applies=False` (another engine is chosen) greys the slider out and says why.
        """
        self._cost = cost
        self.slider.setEnabled(applies)
        self.spin.setEnabled(applies)
        if not applies:
            self.labels.set_latencies([])
            self.note.setText("Applies to the diffusion engine only; Whisper writes word by word until the "
                              "sentence ends.")
        elif cost is None:
            self.labels.set_latencies(["–"] * len(STOPS))
            self.note.setText("Latency: not measured yet. It appears here after your first dictation with this "
                              "model.")
        else:
            self.labels.set_latencies([f"≈ {format_seconds(cost.estimate_ms(s))}" for _, s in STOPS])
            self.note.setText(f"Measured on this computer from your last dictations: {cost.step_ms:.0f} ms per "
                              f"step plus {cost.fixed_ms:.0f} ms for the rest.")

    def _slider_moved(self, position: int) -> None:
        self.spin.blockSignals(True)
        self.spin.setValue(steps_for_position(position))
        self.spin.blockSignals(False)
        self._emit()

    def _spin_changed(self, steps: int) -> None:
        self.slider.blockSignals(True)
        self.slider.setValue(position_for_steps(steps))
        self.slider.blockSignals(False)
        self._emit()

    def _emit(self) -> None:
        self.labels.update()
        if self._cost is not None:
            self.set_cost(self._cost)
        self.value_changed.emit(self.steps())
