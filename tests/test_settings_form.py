"""The settings window is generated from the schema, writes each change to the file and salvages a broken one."""

from __future__ import annotations

import json
import os

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QCheckBox, QComboBox, QLineEdit, QSpinBox

from app import config
from app.config import Settings
from app.latency import LatencyRecord, spec_key
from app.ui.models import ModelPanel
from app.ui.settings_store import SettingsStore
from app.ui.settings_window import SettingsWindow
from app.ui.widgets.hotkey_edit import HotkeyEdit
from app.ui.widgets.microphone import MicrophonePicker
from app.ui.widgets.quality_slider import QualitySlider
from app.ui.widgets.word_lists import ReplacementsTable, WordListEdit

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

CUSTOM = {"quality": QualitySlider, "hotkey": HotkeyEdit, "microphone": MicrophonePicker, "model": ModelPanel,
          "word_list": WordListEdit, "replacements": ReplacementsTable}


@pytest.fixture
def path(tmp_path):
    return tmp_path / "settings.json"


def open_window(qtbot, store: SettingsStore, latency: LatencyRecord | None = None) -> SettingsWindow:
    window = SettingsWindow(store, latency, mic_monitor=False)
    qtbot.addWidget(window)
    window.show()
    return window


def saved(path) -> dict:
    return json.loads(path.read_text())


def test_every_schema_field_gets_a_widget_chosen_by_its_type(qtbot, path):
    window = open_window(qtbot, SettingsStore(path=path))
    fields = config.schema()
    assert set(window.editors) == {f.name for f in fields}
    for f in fields:
        widget, meta = window.editors[f.name].widget, f.metadata
        expected = (CUSTOM[meta["widget"]] if meta["widget"] else QCheckBox if isinstance(f.default, bool)
                    else QComboBox if meta["choices"] else QSpinBox if isinstance(f.default, int) else QLineEdit)
        assert isinstance(widget, expected), f.name
        assert widget.toolTip() == meta["help"]
    groups = list(dict.fromkeys(f.metadata["group"] for f in fields))
    assert [window.pages.item(i).text() for i in range(window.pages.count())] == groups
    language = window.editors["language"].widget
    assert [language.itemText(i) for i in range(language.count())] == [
        "Detect automatically", "English", "German", "French", "Spanish", "Hindi", "Mandarin"]


def test_each_changed_widget_writes_the_file_and_announces_the_change(qtbot, path):
    store = SettingsStore(path=path)
    window = open_window(qtbot, store)
    changes = []
    store.changed.connect(lambda new, old: changes.append((new, old)))
    e = window.editors

    mode = e["mode"].widget
    mode.setCurrentIndex(mode.findData("toggle"))
    mode.activated.emit(mode.currentIndex())
    e["post_roll_ms"].widget.setValue(500)
    e["skip_silence"].widget.setChecked(False)
    e["device"].widget.setText(" cpu ")
    e["device"].widget.editingFinished.emit()
    e["steps"].widget.slider.setValue(3)  # "Accurate"
    language = e["language"].widget
    language.setCurrentIndex(language.findData("de"))
    language.activated.emit(language.currentIndex())

    on_disk = saved(path)
    assert (on_disk["mode"], on_disk["post_roll_ms"], on_disk["skip_silence"], on_disk["device"],
            on_disk["steps"], on_disk["language"]) == ("toggle", 500, False, "cpu", 16, "de")
    assert config.load(path) == (store.settings, [])
    assert len(changes) == 6 and changes[-1][0].language == "de" and changes[-1][1].language == "auto"


def test_an_invalid_value_is_explained_beside_its_field_and_not_saved(qtbot, path):
    store = SettingsStore(path=path)
    window = open_window(qtbot, store)
    endpoint = window.editors["hub_endpoint"].widget
    endpoint.setText("ftp://mirror.example")
    endpoint.editingFinished.emit()
    error = window.errors["hub_endpoint"]
    assert not error.isHidden() and "must start with http:// or https://" in error.text()
    assert not path.exists() and store.settings.hub_endpoint == ""
    endpoint.setText("https://hf-mirror.example/")
    endpoint.editingFinished.emit()
    assert error.isHidden() and saved(path)["hub_endpoint"] == "https://hf-mirror.example"


def test_a_device_no_runtime_takes_is_refused_beside_its_field(qtbot, path):
    """"gpu" was saved, and the worker then could not load the model at all; the form said nothing."""
    store = SettingsStore(path=path)
    window = open_window(qtbot, store)
    device = window.editors["device"].widget
    device.setText("gpu")
    device.editingFinished.emit()
    error = window.errors["device"]
    assert not error.isHidden() and "use auto, cpu, cuda or cuda:N" in error.text()
    assert not path.exists() and store.settings.device == "auto"
    device.setText("CUDA:1")
    device.editingFinished.emit()
    assert error.isHidden() and saved(path)["device"] == "cuda:1"


def test_a_broken_file_is_salvaged_field_by_field_and_the_window_says_so(qtbot, path):
    path.write_text('{"mode": "hold", "language": "fr", "post_roll_ms": "lots", "sound_cues": false, "steps": 1')
    store = SettingsStore(path=path)
    window = open_window(qtbot, store)
    e = window.editors
    assert e["mode"].widget.currentData() == "hold" and e["language"].widget.currentData() == "fr"
    assert e["sound_cues"].widget.isChecked() is False and e["steps"].widget.steps() == 1
    assert e["post_roll_ms"].widget.value() == Settings().post_roll_ms
    assert window.banner.isVisible() and "not valid JSON" in window.banner.text()
    assert (path.parent / "settings.json.broken").exists() and saved(path)["language"] == "fr"


def test_a_change_from_elsewhere_shows_in_the_window_without_writing_back(qtbot, path):
    store = SettingsStore(path=path)
    window = open_window(qtbot, store)
    writes = []
    store.changed.connect(lambda new, old: writes.append(new))
    store.set("hotkey", "<alt_r>")
    assert window.editors["hotkey"].widget.text() == "Right Alt" and len(writes) == 1


def test_quality_slider_follows_the_engine_and_the_measured_latency(qtbot, path, tmp_path):
    store = SettingsStore(Settings(engine="whisper"), path=path)
    latency = LatencyRecord(tmp_path / "latency.json")
    window = open_window(qtbot, store, latency)
    slider = window.editors["steps"].widget
    assert not slider.slider.isEnabled() and "diffusion engine only" in slider.note.text()

    engine = window.editors["engine"].widget
    engine.setCurrentIndex(engine.findData("diffusion"))
    engine.activated.emit(engine.currentIndex())
    assert slider.slider.isEnabled() and "not measured yet" in slider.note.text()
    assert window.editors["model"].widget.edit.placeholderText().startswith("interfaze-ai/diffusion-gemma-asr-small")

    latency.add(spec_key(store.settings.engine_spec()), {"steps": [50.0, 50.0, 50.0, 50.0], "total": 450.0})
    window.refresh_latency()
    assert slider.labels._latencies == ["≈ 0.45 s", "≈ 0.65 s", "≈ 0.85 s", "≈ 1.1 s", "≈ 1.9 s"]
    assert "50 ms per step plus 250 ms" in slider.note.text()


def test_keyboard_reaches_every_field_in_page_order(qtbot, path):
    window = open_window(qtbot, SettingsStore(path=path))
    window.activateWindow()
    window.pages.setFocus()
    window.pages.setCurrentRow(1)  # Keys
    order = []
    for _ in range(8):
        qtbot.keyClick(window.focusWidget(), Qt.Key.Key_Tab)
        order.append(window.focusWidget())
    keys = [window.editors[n].widget for n in ("hotkey", "mode", "tap_ms", "cancel_key")]
    positions = [next(i for i, w in enumerate(order) if w is k or k.isAncestorOf(w)) for k in keys]
    assert positions == sorted(positions)


def test_the_vocabulary_is_edited_one_entry_per_line(qtbot, path):
    store = SettingsStore(path=path)
    window = open_window(qtbot, store)
    window.show_page("Words")
    words = window.editors["vocabulary"].widget
    qtbot.mouseClick(words.viewport(), Qt.MouseButton.LeftButton)
    qtbot.keyClicks(words, "Kubernetes")
    words.insertPlainText("\n\n  Siobhan  \nKubernetes\n")
    window.editors["remove_fillers"].widget.setFocus()  # leaving the field commits it
    qtbot.waitUntil(lambda: path.exists())
    assert saved(path)["vocabulary"] == ["Kubernetes", "Siobhan"]
    assert store.settings.vocabulary == ("Kubernetes", "Siobhan")
    assert words.toPlainText() == "Kubernetes\nSiobhan"  # the saved value, shown back tidied


def test_replacements_table_saves_pairs_and_explains_a_malformed_row_without_dropping_it(qtbot, path):
    store = SettingsStore(path=path)
    window = open_window(qtbot, store)
    table = window.editors["replacements"].widget
    error = window.errors["replacements"]
    qtbot.mouseClick(table.add_button, Qt.MouseButton.LeftButton)
    table.table.item(0, 0).setText("at sign")
    table.table.item(0, 1).setText("@")
    assert saved(path)["replacements"] == [["at sign", "@"]]
    qtbot.mouseClick(table.add_button, Qt.MouseButton.LeftButton)
    table.table.item(1, 1).setText("ana@example.org")  # "It writes" without "You say"
    assert not error.isHidden() and "Replacement 2 has no spoken words" in error.text()
    assert saved(path)["replacements"] == [["at sign", "@"]]  # not saved...
    assert table.pairs() == [["at sign", "@"], ["", "ana@example.org"]]  # ...and not dropped either
    table.table.item(1, 0).setText("My Email")
    assert error.isHidden()
    assert saved(path)["replacements"] == [["at sign", "@"], ["My Email", "ana@example.org"]]
    table.table.selectRow(0)
    qtbot.mouseClick(table.remove_button, Qt.MouseButton.LeftButton)
    assert saved(path)["replacements"] == [["My Email", "ana@example.org"]]
    assert window.editors["remove_fillers"].widget.isChecked() and not window.editors["spoken_punctuation"].widget.isChecked()


def test_a_malformed_replacement_is_named_by_its_row_in_the_table(qtbot, path):
    """An empty row above it (Add pressed twice) was not counted: the sentence named "Replacement 1" beside row 2."""
    window = open_window(qtbot, SettingsStore(path=path))
    table = window.editors["replacements"].widget
    qtbot.mouseClick(table.add_button, Qt.MouseButton.LeftButton)
    qtbot.mouseClick(table.add_button, Qt.MouseButton.LeftButton)
    table.table.item(1, 1).setText("ana@example.org")
    assert "Replacement 2 has no spoken words" in window.errors["replacements"].text()
    table.table.item(1, 0).setText("my email")
    assert window.errors["replacements"].isHidden() and saved(path)["replacements"] == [["my email", "ana@example.org"]]


def test_a_malformed_replacement_in_the_file_is_reported_and_kept_aside(qtbot, path):
    path.write_text(json.dumps({"replacements": [["at sign", "@"], ["", "orphan"]], "vocabulary": ["Nguyen"]}))
    store = SettingsStore(path=path)
    window = open_window(qtbot, store)
    assert window.banner.isVisible() and "Replacement 2 has no spoken words" in window.banner.text()
    assert "orphan" in (path.parent / "settings.json.broken").read_text()
    assert window.editors["vocabulary"].widget.toPlainText() == "Nguyen"


def _wheel_down(widget) -> None:
    """One notch of the mouse wheel over `widget`, as Qt delivers it (to the parent when ignored)."""
    from PySide6.QtCore import QPoint, QPointF
    from PySide6.QtGui import QWheelEvent
    from PySide6.QtWidgets import QApplication

    centre = QPointF(widget.rect().center())
    event = QWheelEvent(centre, QPointF(widget.mapToGlobal(centre)), QPoint(0, 0), QPoint(0, -120),
                        Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(widget, event)


def test_the_wheel_passing_over_a_field_does_not_change_it(qtbot, path):
    """Scrolling the page with the pointer resting on "Keep for (days)" cut it from 30 to 25 (and the running app
    deleted the transcripts older than that at once); one over Engine switched the engine and reloaded the model."""
    store = SettingsStore(path=path)
    window = open_window(qtbot, store)
    window.show_page("History")
    days, engine = window.editors["history_days"].widget, window.editors["engine"].widget
    window.pages.setFocus()
    for _ in range(5):
        _wheel_down(days)
        _wheel_down(engine)
    assert days.value() == 30 and engine.currentData() == "auto" and not path.exists()
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow)
    days.setFocus()  # clicked or tabbed into: the wheel is for it now
    _wheel_down(days)
    assert store.settings.history_days == 29 and saved(path)["history_days"] == 29


def test_with_a_speech_server_the_model_field_says_it_is_not_used(qtbot, path):
    """Engine server left the model empty, which the panel read as the current folder: "A folder on this computer:
    no download needed. Press Check to try loading it", and Check ran a local model check for the server."""
    store = SettingsStore(path=path)
    window = open_window(qtbot, store)
    panel, engine = window.editors["model"].widget, window.editors["engine"].widget
    engine.setCurrentIndex(engine.findData("server"))
    engine.activated.emit(engine.currentIndex())
    assert store.settings.engine == "server" and "Server URL" in panel.status.text()
    assert "folder" not in panel.status.text()
    assert not any(w.isEnabled() for w in (panel.edit, panel.browse_button, panel.download_button, panel.check_button))
    engine.setCurrentIndex(engine.findData("whisper"))
    engine.activated.emit(engine.currentIndex())
    assert panel.check_button.isEnabled() and panel.edit.isEnabled() and "openai/whisper-base" in panel.status.text()


@pytest.mark.parametrize("address", ["http://gpu box:8765", "http://gpu-box:99999", "http://:8765"])
def test_a_server_address_no_connection_can_use_is_refused_beside_its_field(qtbot, path, address):
    """Only the http:// prefix was checked: "http://gpu box:8765" was saved and every dictation then failed to
    connect, with the form saying nothing."""
    store = SettingsStore(path=path)
    window = open_window(qtbot, store)
    window.show_page("Model")
    url = window.editors["server_url"].widget
    url.setText(address)
    url.editingFinished.emit()
    error = window.errors["server_url"]
    assert not error.isHidden() and "is not a web address" in error.text() and "http://gpu-box:8765" in error.text()
    assert not path.exists() and store.settings.server_url == ""
    url.setText("http://gpu-box:8765/")
    url.editingFinished.emit()
    assert error.isHidden() and saved(path)["server_url"] == "http://gpu-box:8765"


@pytest.mark.parametrize("name", ["whisper base", "openai/whisper base", "whisper-base"])
def test_a_model_name_no_engine_can_load_is_refused_beside_its_field(qtbot, path, tmp_path, name):
    """The panel said "neither a folder nor a Hugging Face id", yet the name was saved and every dictation then
    failed to load the model. A folder that is not there now (a drive not mounted) is still taken."""
    store = SettingsStore(path=path)
    window = open_window(qtbot, store)
    window.show_page("Model")
    panel = window.editors["model"].widget
    panel.edit.setText(name)
    panel.edit.editingFinished.emit()
    error = window.errors["model"]
    assert not error.isHidden() and "neither a folder" in error.text() and "openai/whisper-base" in error.text()
    assert not path.exists() and store.settings.model == ""
    for accepted in ("openai/whisper-small", str(tmp_path / "unplugged drive" / "my model")):
        panel.edit.setText(accepted)
        panel.edit.editingFinished.emit()
        assert error.isHidden() and saved(path)["model"] == accepted


def test_a_refused_value_is_gone_when_the_window_opens_again(qtbot, tmp_path):
    """A device "gpu" is refused beside the field but stayed in it, red message and all, after closing and
    opening the window again, though "auto" applied: closing puts back what applies."""
    store = SettingsStore(path=tmp_path / "settings.json")
    window = SettingsWindow(store, mic_monitor=False)
    qtbot.addWidget(window)
    window.show()
    device = window.editors["device"].widget
    device.setText("gpu")
    device.editingFinished.emit()
    assert not window.errors["device"].isHidden() and store.settings.device == "auto"
    window.close()
    window.show()
    assert device.text() == "auto" and window.errors["device"].isHidden()
