"""Editors generated from the settings schema: one per field, chosen by its type, choices, range and widget hint.

A new field in `app/config.py` appears in the settings window with no code here: a bool becomes a
check box, a field with choices a combo box, an int with a range a spin box, other text a line
edit; a `widget` hint picks a custom editor (quality slider, hotkey capture, microphone, model, word list,
replacements table).
Each editor reports a new value through one callback and can be set from the settings without
echoing it back, so the window and the running app never ping-pong.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QCheckBox, QLineEdit, QWidget

from app.engine.base import AUTO, LANGUAGES
from app.ui.models import ModelPanel
from app.ui.widgets.hotkey_edit import HotkeyEdit
from app.ui.widgets.microphone import MicrophonePicker
from app.ui.widgets.quality_slider import QualitySlider
from app.ui.widgets.wheel import ComboBox, SpinBox
from app.ui.widgets.word_lists import ReplacementsTable, WordListEdit

OnChange = Callable[[Any], None]


@dataclass
class Editor:
    """A field's widget, how to show a value in it silently, and whether it carries its own label."""

    widget: QWidget
    show: Callable[[Any], None]
    labelled: bool = False  # a check box shows the field's label itself
    compact: bool = False  # keeps its natural width instead of filling the row (numbers, choices, keys)


def choice_label(name: str, value: str) -> str:
    """How a choice reads in the form: language names, "Ctrl+Shift+V", "Hybrid"; codes like bf16 as they are."""
    if name == "language":
        return "Detect automatically" if value == AUTO else LANGUAGES.get(value, value)
    if "+" in value:
        return "+".join(part.capitalize() if len(part) > 1 else part.upper() for part in value.split("+"))
    return value.capitalize() if value.isalpha() else value


def make_editor(field: dataclasses.Field, on_change: OnChange, *, mic_monitor: bool = True) -> Editor:
    """The editor for one schema field; `on_change(value)` is called when the user changes it."""
    meta, kind = field.metadata, type(field.default)
    hint = meta.get("widget")
    if hint == "quality":
        slider = QualitySlider()
        slider.value_changed.connect(on_change)
        return Editor(slider, slider.set_steps)
    if hint == "hotkey":
        edit = HotkeyEdit()
        edit.combo_changed.connect(on_change)
        return Editor(edit, edit.set_combo, compact=True)
    if hint == "microphone":
        picker = MicrophonePicker(monitor=mic_monitor)
        picker.device_changed.connect(on_change)
        return Editor(picker, picker.set_device)
    if hint == "model":
        panel = ModelPanel()
        panel.model_changed.connect(on_change)
        return Editor(panel, panel.set_model)
    if hint == "word_list":
        words = WordListEdit()
        words.entries_changed.connect(on_change)
        return Editor(words, words.set_entries)
    if hint == "replacements":
        table = ReplacementsTable()
        table.pairs_changed.connect(on_change)
        return Editor(table, table.set_pairs)
    if kind is bool:
        box = QCheckBox(meta["label"])
        box.toggled.connect(on_change)
        return Editor(box, lambda v: _quietly(box, lambda: box.setChecked(bool(v))), labelled=True)
    if meta.get("choices"):
        combo = ComboBox()  # the wheel changes it only when focused (app/ui/widgets/wheel.py)
        values = list(meta["choices"])
        for value in values:
            combo.addItem(choice_label(field.name, value), value)
        combo.activated.connect(lambda i: on_change(values[i]))  # no reference to `combo`: see _LineEditor
        combo.setMinimumWidth(220)
        return Editor(combo, lambda v: _quietly(combo, lambda: combo.setCurrentIndex(max(0, combo.findData(v)))),
                      compact=True)
    if kind is int:
        spin = SpinBox()  # likewise
        low, high = meta["range"]
        spin.setRange(low, high)
        spin.setKeyboardTracking(False)  # typing "1500" must not save 1, 15 and 150 on the way
        spin.setAccelerated(True)
        spin.valueChanged.connect(on_change)
        spin.setMinimumWidth(120)
        return Editor(spin, lambda v: _quietly(spin, lambda: spin.setValue(int(v))), compact=True)
    line = _LineEditor()
    line.committed.connect(on_change)
    return Editor(line, lambda v: _quietly(line, lambda: line.setText(str(v))))


class _LineEditor(QLineEdit):
    """A line edit that reports its text when editing ends.

    A lambda slot that holds its own sender (`line.editingFinished -> lambda: line.text()`) crashes
    PySide6 6.12 when the widget is deleted, so the text travels in a signal of its own.
    """

    committed = Signal(str)

    def __init__(self) -> None:
        super().__init__()
        self.setClearButtonEnabled(True)
        self.editingFinished.connect(self._finished)

    def _finished(self) -> None:
        self.committed.emit(self.text().strip())


def _quietly(widget: QWidget, action: Callable[[], None]) -> None:
    widget.blockSignals(True)
    try:
        action()
    finally:
        widget.blockSignals(False)
