"""The microphone picker with a live input level, so the user sees the right device hears them.

The level comes from the same `MicrophoneSource` the recorder uses (same device lookup, same
16 kHz stream), opened only while the picker is on screen: an open microphone shows a recording
indicator on some desktops and switches Bluetooth headsets to their call mode. The audio thread
only stores the newest level; a 30 Hz timer on the GUI thread draws it.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from app.audio.sources import MicrophoneSource, list_microphones
from app.errors import UserError
from app.ui.widgets.level_meter import LevelMeter, level_from_db
from app.ui.widgets.wheel import ComboBox

log = logging.getLogger(__name__)
DEFAULT_LABEL = "System default"


class MicrophonePicker(QWidget):
    """Emits `device_changed(name)` ("" for the system default)."""

    device_changed = Signal(str)

    def __init__(self, parent: QWidget | None = None, *, monitor: bool = True) -> None:
        super().__init__(parent)
        self.combo = ComboBox()
        self.combo.setAccessibleName("Microphone")
        self.combo.setMinimumContentsLength(24)
        self.combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.setToolTip("Look for microphones again, e.g. after plugging one in.")
        self.meter = LevelMeter()
        self.status = QLabel()
        self.status.setObjectName("hint")
        self.status.setWordWrap(True)
        row = QHBoxLayout()
        row.addWidget(self.combo, 1)
        row.addWidget(self.refresh_button)
        column = QVBoxLayout(self)
        column.setContentsMargins(0, 0, 0, 0)
        column.addLayout(row)
        column.addWidget(self.meter)
        column.addWidget(self.status)
        self.setFocusProxy(self.combo)
        self._monitor_enabled = monitor
        self._source: MicrophoneSource | None = None
        self._db = math.nan
        self._timer = QTimer(self, interval=33, timeout=self._draw)
        self._device = ""
        self.combo.activated.connect(self._picked)
        self.refresh_button.clicked.connect(self.refresh)
        self.refresh()

    def device(self) -> str:
        return self._device

    def set_device(self, name: str) -> None:
        """Select `name` without emitting `device_changed`; a device that is gone stays listed as missing."""
        self._device = name
        index = self.combo.findData(name)
        if index < 0:
            self.combo.addItem(f"{name} (not connected)", name)
            index = self.combo.count() - 1
        self.combo.setCurrentIndex(index)
        self._restart_monitor()

    def refresh(self) -> None:
        names = list_microphones()
        self.combo.blockSignals(True)
        self.combo.clear()
        self.combo.addItem(DEFAULT_LABEL, "")
        for name in dict.fromkeys(names):
            self.combo.addItem(name, name)
        self.combo.blockSignals(False)
        if not names:
            self.status.setText("No microphone found. Plug one in (or check that PortAudio can see it), then "
                                "press Refresh.")
        else:
            self.status.setText("")
        self.set_device(self._device)

    def _picked(self, index: int) -> None:
        name = self.combo.itemData(index) or ""
        if name != self._device:
            self._device = name
            self._restart_monitor()
            self.device_changed.emit(name)

    # ---- live level ------------------------------------------------------------------------------
    def showEvent(self, event) -> None:
        super().showEvent(event)
        self._restart_monitor()

    def hideEvent(self, event) -> None:
        self._stop_monitor()
        super().hideEvent(event)

    def _restart_monitor(self) -> None:
        self._stop_monitor()
        if not (self._monitor_enabled and self.isVisible()) or self.combo.count() <= 1:
            return
        source = MicrophoneSource(self._device)
        try:
            source.start(self._on_block)
        except UserError as exc:
            self.status.setText(str(exc))
            return
        self._source = source
        self._timer.start()

    def _stop_monitor(self) -> None:
        self._timer.stop()
        source, self._source = self._source, None
        if source is not None:
            try:
                source.stop()
            except Exception as exc:  # PortAudio errors on a device that vanished must not break the window
                log.warning("closing the microphone monitor failed: %s", exc)
        self._db = math.nan
        self.meter.set_level(0.0)

    def _on_block(self, block: np.ndarray) -> None:  # audio thread: store only
        self._db = float(20 * np.log10(np.sqrt(np.mean(block * block)) + 1e-10))

    def _draw(self) -> None:
        self.meter.set_level(level_from_db(self._db))
