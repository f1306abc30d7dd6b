"""A recording whose transcription fails is kept, never lost: the real DictationApp with its UI wiring
(AppUi, the History window offscreen), real speech audio and real engines in their own processes.

- A speech server that refuses the upload (a real `app serve` subprocess whose upload limit is set
  below the recording's size: HTTP 413) while the model itself works: the recording waits in the
  history, "Transcribe again" says why it fails again, "Save recording…" writes it out, and once the
  settings switch to the local worker (Whisper tiny.en) it is transcribed into its entry.
- The app quits while a job is under way: the next start transcribes the recording.

The only stand-ins: the sound cues' player, the "Paste again" paster (no paste happens here) and
the file dialog of "Save recording…" (a native dialog; the test answers it with a path). When kept
recordings are sent again follows the speech client's states in an order a real worker gives only
now and then (a dictation waiting as the model loads), so that is driven with stand-ins at the end.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QObject, Qt, Signal  # noqa: E402
from PySide6.QtWidgets import QFileDialog  # noqa: E402

from app.audio.loading import load_audio  # noqa: E402
from app.config import Settings  # noqa: E402
from app.history import NOT_TRANSCRIBED, TRANSCRIBED_LATER, History, wav_samples  # noqa: E402
from app.ui.dictation import DictationApp  # noqa: E402
from app.ui.kept import KeptRecordings  # noqa: E402
from app.ui.sounds import SoundCues  # noqa: E402
from app.ui.wiring import AppUi  # noqa: E402
from tests.data import WHISPER_TINY_EN, WHISPER_TINY_EN_CT2  # noqa: E402
from tests.server_process import ServerProcess  # noqa: E402
from tests.speech import wer  # noqa: E402
from tests.test_settings_live import FakePaster  # noqa: E402

LONG = 300_000  # ms: generous waits for a loaded 2-core machine (not a speed assertion)
MAX_WER = 0.35


def start_app(settings: Settings):
    """The real DictationApp (its worker or server client), not listening for hotkeys, with the real UI wiring."""
    app = DictationApp(settings)
    notices: list[str] = []
    app.tray.notify = lambda message, error=False: notices.append(message)
    ui = AppUi(app, cues=SoundCues(False, player=lambda data, rate: None), repaster=FakePaster())
    app.worker.start()
    return app, ui, notices


def stop_app(app, ui) -> None:
    ui.shutdown()  # first: it keeps what is still being transcribed
    app.worker.stop()


def only_entry(ui):
    entries = ui.history.search()
    assert len(entries) == 1, entries
    return entries[0]


@pytest.fixture
def strict_server(home, clip):
    """A server with a working model whose upload limit is a tenth of the recording's FLAC size."""
    server = ServerProcess(["--engine", "faster-whisper", "--model", str(WHISPER_TINY_EN_CT2), "--device", "cpu",
                            "--max-upload-mb", "0.01"], home / "server.log")
    yield server.wait_ready()
    server.stop()


def test_a_job_refused_by_a_working_server_keeps_its_recording_until_a_model_can_take_it(
        home, clip, strict_server, qtbot, monkeypatch):
    settings = Settings(engine="server", server_url=strict_server.url, language="en", overlay=False)
    app, ui, notices = start_app(settings)
    try:
        qtbot.waitUntil(lambda: app.worker.state == "ready", timeout=LONG)
        audio = load_audio(clip.path)
        app.transcribe(audio)
        qtbot.waitUntil(lambda: ui.history is not None and len(ui.history.search()) == 1, timeout=LONG)
        entry = only_entry(ui)
        assert entry.outcome == NOT_TRANSCRIBED and entry.text == "" and entry.has_audio
        kept = wav_samples(ui.history.audio(entry.id))
        assert len(kept) == len(audio) and np.abs(kept - audio).max() < 1e-3  # the recording itself, 16-bit
        assert any("not transcribed and is kept in History" in n and "Transcribe again" in n for n in notices), notices
        assert app.worker.state == "ready"  # the server works: nothing is retried on its own in a loop
        assert ui.history.search(failed_only=True)[0].id == entry.id  # "Failed only" finds it

        ui.transcripts.show()
        window = ui.transcripts.window
        window.select(entry.id)
        assert window.transcribe_button.isEnabled() and window.save_button.isEnabled()
        assert not window.paste_button.isEnabled() and not window.copy_button.isEnabled()  # no text to paste
        assert "not transcribed" in window.list.currentItem().text(1)

        # "Save recording…": the WAV file the user chose holds the recording.
        saved = home / "saved.wav"
        monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *args, **kwargs: (str(saved), "WAV audio (*.wav)"))
        qtbot.mouseClick(window.save_button, Qt.MouseButton.LeftButton)
        assert saved.read_bytes() == ui.history.audio(entry.id) and window.notice.text() == "Saved as saved.wav."

        # "Transcribe again" while the server still refuses it: the user is told why; the entry stays.
        before = len(notices)
        qtbot.mouseClick(window.transcribe_button, Qt.MouseButton.LeftButton)
        assert window.notice.text().startswith("Sent to the speech model")
        qtbot.waitUntil(lambda: any("again failed" in n for n in notices[before:]), timeout=LONG)
        failure = next(n for n in notices[before:] if "again failed" in n)
        assert "limit of" in failure, failure
        assert only_entry(ui).outcome == NOT_TRANSCRIBED

        # The settings switch to the local worker: once its model has loaded, the recording is transcribed.
        new = dataclasses.replace(settings, engine="whisper", model=str(WHISPER_TINY_EN), device="cpu")
        ui.apply(new, settings)
        qtbot.waitUntil(lambda: only_entry(ui).outcome == TRANSCRIBED_LATER, timeout=LONG)
        done = only_entry(ui)
        assert wer([clip.text], [done.text]) <= MAX_WER, done.text
        assert any(n.startswith("A kept recording is transcribed: ") for n in notices), notices
        qtbot.waitUntil(lambda: window.list.currentItem().text(1) == " ".join(done.text.split()))  # window refreshed
    finally:
        stop_app(app, ui)


def test_a_recording_still_being_transcribed_when_the_app_quits_is_transcribed_at_the_next_start(home, clip, qtbot):
    settings = Settings(engine="whisper", model=str(WHISPER_TINY_EN), device="cpu", language="en", overlay=False)
    audio = load_audio(clip.path)
    app, ui, notices = start_app(settings)
    try:
        app.transcribe(audio)  # queued while the worker still loads its model: it cannot be done before the quit
        assert app.worker.state in ("starting", "loading")
    finally:
        stop_app(app, ui)
    history = History()
    try:
        [entry] = history.search()
        assert entry.outcome == NOT_TRANSCRIBED and entry.has_audio
    finally:
        history.close()

    app, ui, notices = start_app(settings)
    try:
        qtbot.waitUntil(lambda: only_entry(ui).outcome == TRANSCRIBED_LATER, timeout=LONG)
        assert wer([clip.text], [only_entry(ui).text]) <= MAX_WER
        assert not any("kept" in n and "not transcribed" in n for n in notices)  # a quit is no failure to report
    finally:
        stop_app(app, ui)


# -- when kept recordings are sent again: KeptRecordings on its own, the app and its worker stand-ins ----------


class StandInWorker(QObject):
    """Only what KeptRecordings follows of the speech client: its state."""

    state_changed = Signal(str)

    def __init__(self) -> None:
        super().__init__()
        self.state = "starting"

    def become(self, state: str) -> None:
        self.state = state
        self.state_changed.emit(state)


class StandInApp(QObject):
    """Only what KeptRecordings uses of the DictationApp: its settings, worker, jobs and notices."""

    submitted = Signal(str, object)

    def __init__(self) -> None:
        super().__init__()
        self.settings, self.worker, self.sent, self.notices = Settings(), StandInWorker(), [], []

    def transcribe(self, audio: np.ndarray) -> str:
        job_id = f"job-{len(self.sent) + 1}"
        self.sent.append(job_id)
        self.submitted.emit(job_id, audio)
        return job_id

    def notify(self, message: str, error: bool = False) -> None:
        self.notices.append(message)


def test_a_recording_kept_from_the_last_session_is_sent_when_the_model_loads_with_a_dictation_waiting(home):
    history = History(home / "history.db")
    try:
        entry = history.add("", audio=np.full(16_000, 0.1, np.float32), outcome=NOT_TRANSCRIBED)
        app = StandInApp()
        kept = KeptRecordings(app, lambda: history)
        app.worker.become("loading")
        app.transcribe(np.zeros(16_000, np.float32))  # the user dictates while the model loads
        app.worker.become("busy")  # loaded, with that dictation to do first
        app.worker.become("ready")
        assert app.sent == ["job-1", "job-2"] and kept.owns("job-2")
        kept.result("job-2", {"text": "kept words"})
        assert history.get(entry).text == "kept words"
    finally:
        history.close()
