"""The UI attached to the running app (app/ui/wiring.py): live settings, overlay, cues, history, latency.

The app's parts are stand-ins with the same public signals and attributes as DictationApp's, so
these tests see exactly what the wiring asks of them, without a worker, microphone or display.
"""

from __future__ import annotations

import html
import math
import os
import re
import time
from types import SimpleNamespace

import numpy as np
import pytest
from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtWidgets import QApplication, QMessageBox

from app.audio.recorder import RecorderOptions
from app.config import Settings
from app.controller import State
from app.latency import spec_key
from app.ui.dictation import DictationApp
from app.ui.sounds import SoundCues
from app.ui.wiring import AppUi

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


class FakeWorker(QObject):
    ready = Signal(dict)
    progress = Signal(str, int, int, str)
    result = Signal(str, dict)
    failed = Signal(str, str, str)
    state_changed = Signal(str)
    preparing = Signal(int, int, str)

    def __init__(self) -> None:
        super().__init__()
        self.state = "ready"
        self.info: dict = {}
        self.preparation: dict = {}
        self.specs = []
        self.idle_unload_s: float | None = None

    def configure(self, spec) -> None:
        self.specs.append(spec)

    def set_idle_unload(self, seconds: float | None) -> None:
        self.idle_unload_s = seconds


class FakePaster(QObject):
    finished = Signal(bool, str)

    def __init__(self) -> None:
        super().__init__()
        self.options = None
        self.outcome = ""
        self.pasted: list[str] = []
        self.injector = SimpleNamespace(window_class=lambda: "XTerm")

    def paste(self, text: str, language: str = "") -> None:
        self.pasted.append(text)


class FakeTray(QObject):
    settings_requested = Signal()
    history_requested = Signal()


class FakeHotkeys(QObject):
    unavailable = Signal(str)
    ready = Signal()

    def __init__(self) -> None:
        super().__init__()
        self.combos = None
        self.problem: str | None = None
        self.mechanism = "X11 key grab"

    def set_combos(self, combo, cancel) -> None:
        self.combos = (str(combo), str(cancel))

    def pause(self, paused: bool) -> None:
        self.blockSignals(paused)


class FakeRecorder:
    def __init__(self) -> None:
        self.level_db = -100.0
        self.options = RecorderOptions()
        self.source = "old microphone"

    def configure(self, options: RecorderOptions) -> None:
        self.options = options


class FakeApp(QObject):
    submitted = Signal(str, object)
    transcribed = Signal(str, object)

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings
        self.worker, self.paster, self.tray, self.recorder = FakeWorker(), FakePaster(), FakeTray(), FakeRecorder()
        # The real DictationApp's text step (app/text/ on each worker result), run on this stand-in.
        self.worker.result.connect(lambda job, transcript: DictationApp._finish_text(self, job, transcript))
        self.controller = SimpleNamespace(state=State.IDLE, configured=[])
        self.controller.configure = lambda **kw: self.controller.configured.append(kw)
        self.hotkeys = FakeHotkeys()
        self.engine_problem: str | None = None  # as DictationApp: why the model cannot run, while it cannot
        self.notices: list[str] = []
        self.sent: list = []  # audio given to `transcribe`
        self.tray.settings_requested.connect(self.show_settings)

    def show_settings(self) -> None:
        self.notices.append("old settings notice")

    def notify(self, message: str, error: bool = False) -> None:
        self.notices.append(message)

    def transcribe(self, audio) -> str:
        self.sent.append(audio)
        job_id = f"retry{len(self.sent)}"
        self.submitted.emit(job_id, audio)
        return job_id


@pytest.fixture
def env(tmp_path, monkeypatch, qapp):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    app = FakeApp(Settings(engine="diffusion", model="/models/adapter", steps=12))
    played: list[int] = []
    cues = SoundCues(True, player=lambda data, rate: played.append(len(data)))
    repaster = FakePaster()
    ui = AppUi(app, cues=cues, repaster=repaster)
    yield SimpleNamespace(app=app, ui=ui, played=played, cues=cues, repaster=repaster, tmp=tmp_path)
    ui.shutdown()


def test_changes_apply_live_to_every_part(env, qtbot):
    app, store = env.app, env.ui.store
    store.set("model", "/models/other")
    assert env.app.worker.specs[-1].model == "/models/other" and app.settings.model == "/models/other"
    store.set("language", "de")
    assert app.settings.language == "de" and len(app.worker.specs) == 1  # no reload for a language
    store.set("hotkey", "<alt_r>")
    assert app.hotkeys.combos == ("<alt_r>", "<esc>")
    store.set("mode", "toggle")
    assert app.controller.configured[-1] == {"mode": "toggle", "tap_s": 0.4}
    store.set("paste_method", "type")
    assert app.paster.options.method == "type" and env.repaster.options.method == "type"
    store.set("post_roll_ms", 700)
    assert app.recorder.options.post_roll_ms == 700
    store.set("sound_cues", False)
    assert env.cues.enabled is False
    store.set("hub_endpoint", "https://mirror.example")
    assert os.environ["HF_ENDPOINT"] == "https://mirror.example"
    store.set("idle_unload_min", 5)
    assert app.worker.idle_unload_s == 300.0 and len(app.worker.specs) == 1  # no reload for a timeout
    store.set("compile", True)
    assert app.worker.specs[-1].compile is True and app.worker.specs[-1].engine == "diffusion"
    store.set("engine", "server")  # the app's SpeechSwitch swaps clients: no restart (tests/test_speech_switch.py)
    assert app.worker.specs[-1].engine == "server" and app.notices == []

    desktop = env.tmp / "config" / "autostart" / "diffusion-dictate.desktop"
    store.set("autostart", True)
    assert "Exec=" in desktop.read_text() and " -m app" in desktop.read_text()
    store.set("autostart", False)
    assert not desktop.exists()


def test_microphone_is_swapped_only_once_no_recording_uses_it(env, qtbot):
    app = env.app
    app.controller.state = State.RECORDING
    qtbot.waitUntil(lambda: env.ui.overlay.mode == "recording")
    env.ui.store.set("microphone", "USB headset")
    assert app.recorder.source == "old microphone"
    app.controller.state = State.IDLE
    qtbot.waitUntil(lambda: app.recorder.source != "old microphone")
    assert getattr(app.recorder.source, "device", None) == "USB headset"


def test_a_dictation_drives_overlay_cues_history_and_latency(env, qtbot):
    app, ui = env.app, env.ui
    app.controller.state = State.RECORDING
    qtbot.waitUntil(lambda: ui.overlay.mode == "recording")
    assert math.isnan(app.recorder.level_db) and env.played == []  # no cue before the microphone delivers
    assert "Release (or tap Ctrl+Shift+Space) to finish" in ui.overlay.counter.text()
    app.recorder.level_db = -12.0  # the first audio block
    qtbot.waitUntil(lambda: len(env.played) == 1)
    qtbot.waitUntil(lambda: ui.overlay.meter.level > 0.7)

    app.controller.state = State.TRANSCRIBING
    qtbot.waitUntil(lambda: ui.overlay.mode == "transcribing")
    qtbot.waitUntil(lambda: len(env.played) == 2)  # the stop cue
    app.worker.progress.emit("job1", 3, 12, "hello wurld")
    app.worker.progress.emit("job1", 4, 12, "hello world")
    assert ui.overlay.counter.text() == "step 4 of 12" and "world" in ui.overlay.text.text()

    transcript = {"text": "Hello world.", "language": "en", "steps_used": 12,
                  "timings": {"steps": [40.0] * 12, "total": 700.0}}
    app.worker.result.emit("job1", transcript)
    assert ui.overlay.mode == "result"
    [entry] = ui.history.search()
    assert (entry.text, entry.steps, entry.target, entry.paste_ok) == ("Hello world.", 12, "XTerm", None)
    cost = ui.latency.cost(spec_key(app.settings.engine_spec()))
    assert (cost.step_ms, cost.fixed_ms) == (40.0, 220.0)

    app.paster.finished.emit(False, "No window took the text; it is on the clipboard.")
    entry = ui.history.get(entry.id)
    assert entry.paste_ok is False and "clipboard" in entry.paste_message


def test_a_locked_history_is_said_and_the_next_paste_outcome_goes_to_its_own_entry(env, qtbot):
    """Another program holding the history file's lock (an SQLite browser with unsaved edits): the insert raised
    in the slot, nobody was told, and the next dictation's entry got this one's paste outcome."""
    import sqlite3

    app, ui = env.app, env.ui
    ui.history._db.execute("PRAGMA busy_timeout = 50")  # not SQLite's 5 s wait, in a test
    other = sqlite3.connect(str(ui.history.path))
    other.execute("BEGIN IMMEDIATE")
    app.worker.result.emit("job1", {"text": "Not kept.", "timings": {}})
    other.rollback()
    other.close()
    assert any("history could not be updated" in notice and "database is locked" in notice for notice in app.notices)
    app.worker.result.emit("job2", {"text": "Kept.", "timings": {}})
    app.paster.finished.emit(False, "No window took the text.")  # the first dictation's paste
    app.paster.finished.emit(True, "")
    [entry] = ui.history.search()
    assert (entry.text, entry.paste_ok) == ("Kept.", True)


def test_recordings_are_kept_only_when_asked(env, qtbot):
    ui, tone = env.ui, np.full(1600, 0.25, dtype=np.float32)
    env.app.submitted.emit("job1", tone)  # what DictationApp.transcribe emits for each recording it sends
    env.app.worker.result.emit("job1", {"text": "not kept", "timings": {}})
    ui.store.set("history_audio", True)
    env.app.submitted.emit("job2", tone)
    env.app.worker.result.emit("job2", {"text": "kept", "timings": {}})
    assert {e.text: e.has_audio for e in ui.history.search()} == {"not kept": False, "kept": True}


def test_cancelled_recording_plays_no_cue_and_hides_the_overlay(env, qtbot):
    app, ui = env.app, env.ui
    app.controller.state = State.RECORDING
    qtbot.waitUntil(lambda: ui.overlay.mode == "recording")
    app.controller.state = State.IDLE
    qtbot.waitUntil(lambda: ui.overlay.mode == "hidden")
    assert env.played == []


def test_paste_again_from_the_history_window(env, qtbot):
    ui = env.ui
    entry_id = ui.history.add("git status", target="XTerm")
    ui.history.set_paste_result(entry_id, False, "No window took the text.")
    ui.show_history()
    window = ui.history_window
    assert window.isVisible() and window.list.topLevelItem(0).text(2) == "Paste failed"
    window.paste_button.click()
    qtbot.waitUntil(lambda: env.repaster.pasted == ["git status"])
    assert not window.isVisible()
    env.repaster.finished.emit(True, "")
    assert ui.history.get(entry_id).paste_ok is True


def test_tray_and_second_launch_open_the_settings_window(env, qtbot):
    env.app.tray.settings_requested.emit()
    assert env.ui.settings_window is not None and env.ui.settings_window.isVisible()
    assert "old settings notice" not in env.app.notices
    env.ui.settings_window.close()
    env.app.show_settings()  # what the remote "show" command calls
    assert env.ui.settings_window.isVisible()
    hotkey = env.ui.settings_window.editors["hotkey"].widget
    hotkey.click()  # capturing: pressing the current hotkey here must not start a dictation
    assert env.app.hotkeys.signalsBlocked()
    hotkey.click()
    assert not env.app.hotkeys.signalsBlocked()


def test_history_off_keeps_nothing(env, qtbot):
    env.ui.store.set("history", False)
    assert env.ui.history is None
    env.app.worker.result.emit("job", {"text": "secret", "timings": {}})
    env.ui.store.set("history", True)
    assert env.ui.history.search() == []


def test_a_damaged_history_file_is_moved_aside_and_a_new_history_kept(tmp_path, monkeypatch, qapp):
    """It stopped the history at every start with "transcripts are not kept this time", and the tray's History
    then said "turn on Keep history", which was on."""
    from app.history import data_dir

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    damaged = data_dir() / "history.sqlite3"
    damaged.parent.mkdir(parents=True)
    damaged.write_bytes(b"not a database " * 100)
    app = FakeApp(Settings())
    ui = AppUi(app, cues=SoundCues(False, player=lambda data, rate: None), repaster=FakePaster())
    try:
        assert any("history.sqlite3.broken" in notice and "new history" in notice for notice in app.notices), app.notices
        assert (damaged.parent / "history.sqlite3.broken").read_bytes() == b"not a database " * 100
        app.worker.result.emit("job", {"text": "Kept again.", "timings": {}})
        assert [e.text for e in ui.history.search()] == ["Kept again."]
    finally:
        ui.shutdown()


def test_the_app_starts_with_a_history_whose_queries_fail(tmp_path, monkeypatch, qapp):
    """A file that opens but whose pages are broken ("database disk image is malformed" on a query): retention
    pruning at start-up raised, and the app never started."""
    from app.history import History, data_dir
    from tests.test_history import fill_and_damage

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    damaged = History(data_dir() / "history.sqlite3")
    fill_and_damage(damaged)
    damaged.close()
    app = FakeApp(Settings(history_days=0))  # the rows are dated 1970
    ui = AppUi(app, cues=SoundCues(False, player=lambda data, rate: None), repaster=FakePaster())
    try:
        assert any("history.sqlite3.broken" in n and "could still be read" in n for n in app.notices), app.notices
        assert 0 < ui.history.count() < 400
        ui.show_history()
        assert ui.history_window.isVisible() and ui.history_window.list.topLevelItemCount() == ui.history.count()
    finally:
        ui.shutdown()


def test_sound_cue_files_are_small_and_loadable():
    from app.ui.sounds import load_wav
    from app.ui.tray import resources_dir

    for name in ("start", "stop"):
        path = resources_dir() / "sounds" / f"{name}.wav"
        assert path.stat().st_size < 50_000
        data, rate = load_wav(path)
        assert rate == 44100 and 0.1 < len(data) / rate < 0.5 and 0.2 < np.abs(data).max() < 0.5


def test_a_hotkey_another_program_holds_is_said_in_the_settings_window(env, qtbot):
    env.app.hotkeys.problem = "Ctrl+Shift+Space is already taken by another program, so it cannot start dictation."
    env.ui.show_settings()
    banner = env.ui.settings_window.banner
    assert banner.isVisibleTo(env.ui.settings_window) and "already taken by another program" in banner.text()
    env.app.hotkeys.unavailable.emit("Right Alt is already taken by another program, so it cannot start dictation.")
    assert banner.text().startswith("Right Alt is already taken")


def test_a_recording_the_model_could_not_take_is_kept_and_transcribed_once_it_works(env, qtbot):
    app, ui = env.app, env.ui
    audio = np.sin(np.linspace(0, 800, 16000)).astype(np.float32) * 0.5
    app.worker.state = "failed"  # e.g. the model folder is gone
    app.worker.state_changed.emit("failed")
    app.submitted.emit("job1", audio)
    written: list[str] = []  # the row was written, then its outcome: an app quit in between never retried it
    ui.history._db.set_trace_callback(lambda sql: written.append(sql) if sql.startswith(("INSERT", "UPDATE")) else None)
    app.worker.failed.emit("job1", "model_missing", "The model folder /gone does not exist.")
    ui.history._db.set_trace_callback(None)
    assert len(written) == 1 and written[0].startswith("INSERT"), written
    kept = ui.history.search()
    assert len(kept) == 1 and kept[0].outcome == "not_transcribed" and kept[0].text == "" and kept[0].has_audio
    assert any("kept in History" in n for n in app.notices) and ui.kept.waiting == 1
    app.worker.state = "ready"  # fixed in Settings: the worker reloads and says ready
    app.worker.state_changed.emit("ready")
    assert len(app.sent) == 1 and np.allclose(app.sent[0], audio, atol=1e-4)
    app.worker.result.emit("retry1", {"text": " hello again ", "timings": {}})
    entry = ui.history.get(kept[0].id)
    assert entry.text == "hello again" and entry.outcome == "transcribed_later"
    assert len(ui.history.search()) == 1 and not app.paster.pasted, "a late transcript is kept, never pasted"
    assert "hello again" in app.notices[-1] and ui.kept.waiting == 0


def test_refusing_to_record_still_keeps_a_recording_already_made(env, qtbot):
    """"refuse" stops new recordings while the model cannot run; one made before it failed is the user's words."""
    env.ui.store.set("unusable_model", "refuse")
    env.app.worker.state = "failed"
    env.app.worker.state_changed.emit("failed")
    env.app.submitted.emit("job1", np.full(1600, 0.25, np.float32))
    env.app.worker.failed.emit("job1", "model_missing", "The model folder /gone does not exist.")
    [entry] = env.ui.history.search()
    assert entry.outcome == "not_transcribed" and entry.has_audio and env.ui.kept.waiting == 1


def test_a_cancelled_job_keeps_nothing(env, qtbot):
    env.app.submitted.emit("job1", np.full(1600, 0.25, np.float32))
    env.app.worker.failed.emit("job1", "cancelled", "The transcription was cancelled.")
    assert env.ui.history.search() == [] and env.ui.kept.waiting == 0


def test_the_overlay_and_the_history_get_the_finished_text_and_the_history_the_raw_one_too(env, qtbot):
    app, ui = env.app, env.ui
    ui.store.set("vocabulary", ["Kubernetes"])
    ui.store.set("replacements", [["at sign", "@"]])
    ui.store.set("spoken_punctuation", True)
    app.worker.result.emit("job1", {"text": "Um, write ops at sign cuber netties period", "language": "en",
                                    "timings": {}})
    shown = html.unescape(re.sub(r"<[^>]+>", "", ui.overlay.text.text()))
    assert ui.overlay.mode == "result" and shown == "Write ops @ Kubernetes."
    [entry] = ui.history.search()
    assert (entry.text, entry.raw_text) == ("Write ops @ Kubernetes.", "Um, write ops at sign cuber netties period")


def _answer_next_box(qtbot, choose: str, seen: list[str]) -> None:
    """When the modal question opens, note its text and click the button whose label starts with `choose`."""
    def answer() -> None:
        box = QApplication.activeModalWidget()
        if not isinstance(box, QMessageBox):
            return QTimer.singleShot(20, answer)
        seen.append(box.text())
        next(b for b in box.buttons() if b.text().replace("&", "").startswith(choose)).click()

    QTimer.singleShot(0, answer)


def test_a_shorter_retention_asks_before_it_deletes_transcripts(env, qtbot):
    """Typing 10 into "Keep at most" (meaning 100) deleted all but the ten newest transcripts at once, for good.
    The settings window now asks, saying how many would go; Cancel keeps them all and the old value."""
    ui = env.ui
    for n in range(25):
        ui.history.add(f"transcript {n}", created=time.time() - 3600 + n)  # within "Keep for 30 days"
    env.app.tray.settings_requested.emit()
    window = ui.settings_window
    keep = window.editors["history_max"].widget
    seen: list[str] = []
    _answer_next_box(qtbot, "Cancel", seen)
    keep.setValue(10)
    assert seen == ["Keeping at most 10 transcripts deletes the oldest 15 transcripts now, and they cannot be "
                    "brought back."]
    assert ui.history.count() == 25 and ui.store.settings.history_max == 1000 and keep.value() == 1000
    _answer_next_box(qtbot, "Delete", seen)
    keep.setValue(20)
    assert len(seen) == 2 and "deletes the oldest 5 transcripts" in seen[1]
    assert ui.history.count() == 20 and ui.store.settings.history_max == 20
    keep.setValue(500)  # deletes nothing: no question
    assert len(seen) == 2 and ui.store.settings.history_max == 500


def test_the_recording_hint_names_the_hands_free_pause(env, qtbot):
    env.ui.store.set("auto_stop_s", 2)
    env.app.controller.state = State.RECORDING
    qtbot.waitUntil(lambda: env.ui.overlay.mode == "recording")
    assert "Release (or tap Ctrl+Shift+Space) to finish, or pause 2 s · Esc cancels" in env.ui.overlay.counter.text()
    assert env.app.recorder.options.auto_stop_s == 2


def test_transcribe_again_sends_an_entry_once_while_it_is_on_its_way(env, qtbot):
    """A second click on "Transcribe again" (or one during the re-send after a load) sent it twice."""
    app, ui = env.app, env.ui
    entry = ui.history.add("", audio=np.full(1600, 0.25, np.float32), outcome="not_transcribed")
    assert ui.kept.transcribe_again(entry) and ui.kept.transcribe_again(entry)
    assert len(app.sent) == 1
    app.worker.result.emit("retry1", {"text": "hello", "timings": {}})
    assert ui.history.get(entry).text == "hello"
    assert ui.kept.transcribe_again(entry) and len(app.sent) == 2  # done: it may be sent again
