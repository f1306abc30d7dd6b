"""The running app when its model cannot load, and once it can: the real DictationApp, tray and worker
subprocess (Whisper tiny.en), Qt offscreen. The error state must not outlive the problem."""

from __future__ import annotations

import dataclasses
import os

import pytest

from app.config import Settings
from app.controller import State
from app.ui.dictation import DictationApp
from tests.data import MANIFEST, WHISPER_TINY_EN

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture
def app(qapp, tmp_path, monkeypatch):
    if not WHISPER_TINY_EN.exists() or not MANIFEST.exists():
        pytest.skip("test data missing: run `python -m tests.data.build`")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("DICTATE_TEST_AUDIO", str(tmp_path / "none.wav"))  # never opened: no recording here
    dictation = DictationApp(Settings(model=str(tmp_path / "gone"), device="cpu", language="en"))
    notices: list[str] = []
    dictation.tray.notify = lambda message, error=False: notices.append(message)
    dictation.notices = notices
    yield dictation
    dictation.worker.stop()


def test_the_error_state_ends_when_the_model_loads(app, qtbot):
    app.worker.start()
    qtbot.waitUntil(lambda: app.worker.state == "failed", timeout=120_000)
    qtbot.waitUntil(lambda: app.controller.state is State.ERROR and app.tray.state is State.ERROR)
    assert app.engine_problem and "gone" in app.engine_problem
    app.settings = dataclasses.replace(app.settings, model=str(WHISPER_TINY_EN))  # fixed in Settings
    app.worker.configure(app.settings.engine_spec())
    qtbot.waitUntil(lambda: app.worker.state == "ready", timeout=120_000)
    qtbot.waitUntil(lambda: app.tray.state is State.IDLE)
    assert app.controller.state is State.IDLE and app.engine_problem is None
    assert app.notices[-1] == "The speech model works now."


def test_refuse_gives_the_reason_instead_of_recording(app, qtbot):
    app.settings = dataclasses.replace(app.settings, unusable_model="refuse")
    app.worker.start()
    qtbot.waitUntil(lambda: app.worker.state == "failed", timeout=120_000)
    app.controller.command("start")
    assert app.controller.state is State.ERROR and app.controller.queued == 0
    assert app.notices[-1].startswith("Not recording: ") and "Settings → Model" in app.notices[-1]
