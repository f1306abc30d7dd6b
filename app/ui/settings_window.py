"""The settings window: every schema field, grouped into pages, saved and applied as it changes.

The form is generated (`settings_form.make_editor`); this module adds the window around it: a
page list on the left, a banner for problems (a salvaged settings file, a failed save), each
field's help under it and its error in red, and the few links between fields (the quality slider
only applies to the diffusion engine and shows that model's measured latency; the model panel
follows the engine, precision, device and hub address). Nothing needs a Save button: the store
saves each accepted change at once, and the running app applies it live.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QKeySequence, QShortcut
from PySide6.QtWidgets import (QFormLayout, QFrame, QHBoxLayout, QLabel, QListWidget, QPushButton, QScrollArea,
                               QStackedWidget, QVBoxLayout, QWidget)

from app import config
from app.engine.base import AUTO, LANGUAGES
from app.errors import UserError
from app.latency import LatencyRecord, spec_key
from app.ui.settings_form import Editor, make_editor
from app.ui.settings_store import SettingsStore, changed_fields
from app.ui.style import apply_style
from app.ui.tray import APP_TITLE
from app.ui.widgets.hotkey_edit import HotkeyEdit

_MODEL_CONTEXT = {"engine", "quantization", "device", "hub_endpoint", "model"}


class SettingsWindow(QWidget):
    """Edits `store` live. `latency` supplies the slider's measured costs (None: never measured).

    `hotkey_capture(on)` says when a hotkey field is taking key presses: pressing the current hotkey
    there must not start a dictation.
    """

    hotkey_capture = Signal(bool)

    def __init__(self, store: SettingsStore, latency: LatencyRecord | None = None, *, mic_monitor: bool = True,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self.latency = latency
        # asked before a change that would delete what the user has (the app's wiring: the history's
        # retention); False keeps the value that applies
        self.confirm: Callable[[str, Any], bool] | None = None
        self.setWindowTitle(f"{APP_TITLE} settings")
        self.setObjectName("settingsWindow")
        apply_style(self)
        self.editors: dict[str, Editor] = {}
        self.errors: dict[str, QLabel] = {}  # a value refused, under its field
        self.notes: dict[str, QLabel] = {}  # a warning about the value that applies, under its field (`note`)
        self._cells: dict[str, QVBoxLayout] = {}
        self.pages = QListWidget()
        self.pages.setObjectName("pages")
        self.pages.setAccessibleName("Settings pages")
        self.stack = QStackedWidget()
        self.banner = QLabel()
        self.banner.setObjectName("banner")
        self.banner.setWordWrap(True)
        self.banner.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.banner.hide()
        self.banner_button = QPushButton()  # what the banner's problem offers to do (`warn(action=...)`)
        self.banner_button.setObjectName("bannerAction")
        self.banner_button.hide()
        self._banner_action: Callable[[], None] | None = None
        self.banner_button.clicked.connect(self._run_banner_action)
        self._model_languages: tuple[str, ...] | None = None  # what the loaded model transcribes (None: unknown)
        self._mechanisms: QLabel | None = None  # how hotkey and paste work on this desktop (show_mechanisms)
        self._build_pages(mic_monitor)
        footer = QHBoxLayout()
        saved = QLabel("Changes are saved and applied as you make them.")
        saved.setObjectName("hint")
        open_file = QPushButton("Open settings file")
        open_file.setObjectName("flat")
        open_file.clicked.connect(self._open_file)
        close = QPushButton("Close")
        close.setDefault(True)
        close.clicked.connect(self.close)
        footer.addWidget(saved, 1)
        footer.addWidget(open_file)
        footer.addWidget(close)
        right = QVBoxLayout()
        right.addWidget(self.banner)
        right.addWidget(self.banner_button, 0, Qt.AlignmentFlag.AlignLeft)
        right.addWidget(self.stack, 1)
        right.addLayout(footer)
        body = QHBoxLayout(self)
        body.setContentsMargins(0, 0, 16, 12)
        body.setSpacing(16)
        body.addWidget(self.pages)
        body.addLayout(right, 1)
        self.pages.currentRowChanged.connect(self.stack.setCurrentIndex)
        self.pages.setCurrentRow(0)
        QShortcut(QKeySequence(Qt.Key.Key_Escape), self, self.close)
        store.changed.connect(self._store_changed)
        store.failed.connect(self.warn)
        self.show_settings(store.settings)
        if store.problems:
            self.warn("Some settings could not be read and were reset to their defaults:\n• "
                       + "\n• ".join(store.problems))
        self.resize(820, 620)

    # ---- building ------------------------------------------------------------------------------
    def _build_pages(self, mic_monitor: bool) -> None:
        groups: dict[str, QFormLayout] = {}
        for field in config.schema():
            group = field.metadata["group"]
            if group not in groups:
                groups[group] = self._add_page(group)
            form = groups[group]
            editor = make_editor(field, lambda value, name=field.name: self.commit(name, value), mic_monitor=mic_monitor)
            editor.widget.setToolTip(field.metadata["help"])
            editor.widget.setObjectName(f"field_{field.name}")
            self.editors[field.name] = editor
            if isinstance(editor.widget, HotkeyEdit):
                editor.widget.capture_toggled.connect(self.hotkey_capture)
            cell = QVBoxLayout()
            cell.setSpacing(3)
            cell.addWidget(editor.widget, 0, Qt.AlignmentFlag.AlignLeft if editor.compact else Qt.AlignmentFlag(0))
            hint = QLabel(field.metadata["help"])
            hint.setObjectName("hint")
            hint.setWordWrap(True)
            error = QLabel()
            error.setObjectName("error")
            error.setWordWrap(True)
            error.hide()
            self.errors[field.name] = error
            cell.addWidget(hint)
            cell.addWidget(error)
            self._cells[field.name] = cell
            label = QLabel("" if editor.labelled else field.metadata["label"])
            label.setBuddy(editor.widget)
            form.addRow(label, cell)

    def _add_page(self, group: str) -> QFormLayout:
        self.pages.addItem(group)
        content = QWidget()
        content.setObjectName("page")
        form = QFormLayout(content)
        form.setContentsMargins(4, 16, 12, 16)
        form.setHorizontalSpacing(18)
        form.setVerticalSpacing(16)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.setLabelAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignTop)
        heading = QLabel(group)
        heading.setObjectName("heading")
        form.addRow(heading)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(content)
        self.stack.addWidget(scroll)
        return form

    # ---- values --------------------------------------------------------------------------------
    def commit(self, name: str, value: Any) -> None:
        """A widget changed: validate and save through the store, or show why not beside the field."""
        error = self.errors[name]
        if self.confirm is not None and not self.confirm(name, value):
            self.editors[name].show(getattr(self.store.settings, name))
            return
        try:
            self.store.set(name, value)
        except UserError as exc:
            error.setText(str(exc))
            error.show()
            editor = self.editors[name]
            if isinstance(editor.widget, HotkeyEdit):  # pressed keys are no text to correct: show what still applies
                editor.show(getattr(self.store.settings, name))
            return
        error.hide()

    def hideEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        """A refused value left in its field (device "gpu", an address with a space) would still be there,
        red message and all, when the window opens again, though the old value applies: closing puts back
        what applies."""
        super().hideEvent(event)
        self.show_settings(self.store.settings)
        for error in self.errors.values():
            error.hide()

    def show_settings(self, settings: config.Settings) -> None:
        """Put every value into its editor (silently) and update the fields that depend on others."""
        for name, editor in self.editors.items():
            editor.show(getattr(settings, name))
        self._update_context(settings)

    def _store_changed(self, new: config.Settings, old: config.Settings) -> None:
        names = changed_fields(new, old)
        for name in names:
            self.editors[name].show(getattr(new, name))
            self.errors[name].hide()
        if names & _MODEL_CONTEXT:
            self._model_languages = None  # the old model's: the new one says its own once loaded
            self._update_context(new)
        self._show_language_fit()

    def show_model_languages(self, languages: list[str] | None) -> None:
        """The loaded model's languages (its `hello`): a language it does not know is warned about beside the
        Language field now, not found out at the next dictation, which that model would refuse."""
        self._model_languages = tuple(languages) if languages else None
        self._show_language_fit()

    def _show_language_fit(self) -> None:
        language, known = self.store.settings.language, self._model_languages
        if known is None or language == AUTO or language in known:
            self.note("language", "")
            return
        names = [LANGUAGES[code] for code in known]
        knows = f"only {names[0]}" if len(names) == 1 else ", ".join(names[:-1]) + f" and {names[-1]}"
        wanted = LANGUAGES[language]
        self.note("language", f"The model in use knows {knows}, not {wanted}: it would refuse your dictations "
                  f"(they are kept, not lost). Choose {names[0] if len(names) == 1 else 'one of those'} here, or a "
                  f"model that knows {wanted}.")

    def note(self, name: str, text: str) -> None:
        """Warn under field `name` about its value, which applies all the same ("" removes the warning)."""
        label = self.notes.get(name)
        if label is None:
            if not text:
                return
            label = self.notes[name] = QLabel()
            label.setObjectName("note")
            label.setWordWrap(True)
            self._cells[name].addWidget(label)
        label.setText(text)
        label.setVisible(bool(text))

    def _update_context(self, settings: config.Settings) -> None:
        model = self.editors["model"].widget
        model.set_context(engine=settings.engine, quantization=settings.quantization, device=settings.device,
                          endpoint=settings.hub_endpoint)
        self.refresh_latency()

    def refresh_latency(self) -> None:
        """Show the measured latency for the current model beside the quality stops (after each dictation)."""
        settings = self.store.settings
        cost = self.latency.cost(spec_key(settings.engine_spec())) if self.latency else None
        self.editors["steps"].widget.set_cost(cost, applies=settings.engine == "diffusion")

    def _open_file(self) -> None:
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.store.path)))

    def warn(self, text: str, action: tuple[str, Callable[[], None]] | None = None) -> None:
        """Show the problem `text` in the banner, with a button for `action` (its label, what it does) if any."""
        self.banner.setText(text)
        self.banner.show()
        self._banner_action = action[1] if action else None
        self.banner_button.setText(action[0] if action else "")
        self.banner_button.setVisible(action is not None)

    def _run_banner_action(self) -> None:
        if self._banner_action is not None:
            self._banner_action()

    def unwarn(self, text: str) -> None:
        """The problem `text` is over (the model loads now): hide the banner if it still says that, and only then,
        so a problem warned about since stays in view."""
        if self.banner.text() == text:
            self.banner.clear()
            self.banner.hide()
            self._banner_action = None
            self.banner_button.hide()

    def show_mechanisms(self, text: str) -> None:
        """How this desktop lets the hotkey be caught and the text be pasted: they differ per desktop
        (X11 grab, Wayland portal or a command to bind; XTest, wtype, ydotool or the clipboard alone)."""
        if self._mechanisms is None:
            self._mechanisms = QLabel()
            self._mechanisms.setObjectName("mechanisms")
            self._mechanisms.setWordWrap(True)
            self._mechanisms.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self.add_page_widget("Keys", self._mechanisms)
        self._mechanisms.setText(text)

    def add_page_widget(self, group: str, widget: QWidget, *, first: bool = False) -> None:
        """Put an extra widget (e.g. a button that opens the history) at the end of a group's page, or
        with `first` right under its heading (a status line such as the model's speed-up progress)."""
        index = self.pages.row(self.pages.findItems(group, Qt.MatchFlag.MatchExactly)[0])
        form = self.stack.widget(index).widget().layout()
        if first:
            form.insertRow(1, "", widget)
        else:
            form.addRow("", widget)

    def show_page(self, group: str) -> None:
        items = self.pages.findItems(group, Qt.MatchFlag.MatchExactly)
        if items:
            self.pages.setCurrentItem(items[0])

    def present(self) -> None:
        """Show and raise the window (a second launch, the tray's Settings…)."""
        self.show()
        self.setWindowState(self.windowState() & ~Qt.WindowState.WindowMinimized)
        self.raise_()
        self.activateWindow()

    def shutdown(self) -> None:
        """At app exit: stop a download or model check in progress (closing the window does not)."""
        self.editors["model"].widget.shutdown()
