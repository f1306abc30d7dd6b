"""A model that cannot run: the real DictationApp with its UI wiring and its real worker subprocess, whose model
folder is missing, then back.

The reason comes in a tray notice that is gone after seconds (trays without notifications never show it); the
tray's menu then points to the settings window, whose banner says it until the model works. What made the
model fail is often gone a while later with nothing in the settings changed (a drive mounted again, the GPU
freed by another program): a dictation made meanwhile tries the model again once its recording is kept, and
so do the tray's menu and the banner's button.
"""

from __future__ import annotations

import dataclasses
import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import Qt  # noqa: E402

from app.audio.loading import load_audio  # noqa: E402
from app.audio.sources import TEST_AUDIO_ENV  # noqa: E402
from app.config import Settings  # noqa: E402
from app.controller import State  # noqa: E402
from app.history import TRANSCRIBED_LATER  # noqa: E402
from app.engine.base import LANGUAGES  # noqa: E402
from tests.data import WHISPER_BASE_CT2, WHISPER_TINY_EN_CT2  # noqa: E402
from tests.speech import wer  # noqa: E402
from tests.test_kept_recordings import LONG, MAX_WER, only_entry, start_app, stop_app  # noqa: E402

MISSING = "/nonexistent/whisper-model-folder"


def test_the_reason_the_model_cannot_run_is_in_the_settings_window_until_it_runs(home, qtbot):
    if not WHISPER_TINY_EN_CT2.exists():
        pytest.skip("test data missing: run `python -m tests.data.build`")
    settings = Settings(engine="faster-whisper", model=MISSING, device="cpu", language="en", overlay=False)
    app, ui, notices = start_app(settings)
    try:
        qtbot.waitUntil(lambda: app.worker.state == "failed" and bool(notices), timeout=LONG)  # the notice is queued
        reason = app.engine_problem
        assert reason and MISSING in reason and reason in notices  # the notice said it, for seconds
        assert "open Settings" in app.tray.status, app.tray.status  # the menu says where it is kept

        ui.show_settings()
        banner = ui.settings_window.banner
        assert banner.isVisibleTo(ui.settings_window) and reason in banner.text(), banner.text()

        # The user fixes the model on that page: once it runs, the banner goes.
        ui.apply(dataclasses.replace(settings, model=str(WHISPER_TINY_EN_CT2)), settings)
        qtbot.waitUntil(lambda: app.worker.state == "ready", timeout=LONG)
        assert not banner.isVisibleTo(ui.settings_window), banner.text()
    finally:
        stop_app(app, ui)


def _states(app) -> list[str]:
    states: list[str] = []
    app.worker.state_changed.connect(states.append)
    return states


def test_a_dictation_while_the_model_cannot_run_tries_it_again_and_its_recording_is_transcribed(home, clip, qtbot):
    """The model's folder is on a drive that is not mounted; it is mounted again, nothing else changes, and the
    user dictates: the recording is kept, the model is tried again, loads, and the recording is transcribed."""
    model = home / "drive" / "whisper-tiny-en"
    settings = Settings(engine="faster-whisper", model=str(model), device="cpu", language="en", overlay=False)
    app, ui, notices = start_app(settings)
    try:
        qtbot.waitUntil(lambda: app.worker.state == "failed", timeout=LONG)
        assert app.tray.retry_offered  # "Try the speech model again" is in the tray's menu
        model.parent.mkdir()
        model.symlink_to(WHISPER_TINY_EN_CT2)  # the drive is back

        states = _states(app)
        app.transcribe(load_audio(clip.path))
        qtbot.waitUntil(lambda: ui.history is not None and len(ui.history.search()) == 1
                        and only_entry(ui).outcome == TRANSCRIBED_LATER, timeout=LONG)
        assert wer([clip.text], [only_entry(ui).text]) <= MAX_WER, only_entry(ui).text
        assert states[0] in ("starting", "loading") and "ready" in states, states  # tried again, settings unchanged
        assert app.engine_problem is None and not app.tray.retry_offered
        assert "The speech model works now." in notices, notices
    finally:
        stop_app(app, ui)


def test_a_press_refused_while_the_model_cannot_run_tries_it_again(home, clip, qtbot, monkeypatch):
    """"When the model cannot run: refuse" records nothing then; the refused press still tries the model again,
    so the next press, once it loads, records."""
    monkeypatch.setenv(TEST_AUDIO_ENV, str(clip.path))
    model = home / "drive" / "whisper-tiny-en"
    settings = Settings(engine="faster-whisper", model=str(model), device="cpu", language="en", overlay=False,
                        unusable_model="refuse")
    app, ui, notices = start_app(settings)
    try:
        qtbot.waitUntil(lambda: app.worker.state == "failed", timeout=LONG)
        model.parent.mkdir()
        model.symlink_to(WHISPER_TINY_EN_CT2)
        app.controller.command("start")
        qtbot.waitUntil(lambda: any(n.startswith("Not recording") for n in notices), timeout=LONG)
        assert app.controller.state is not State.RECORDING
        assert "being tried again" in next(n for n in notices if n.startswith("Not recording"))
        qtbot.waitUntil(lambda: app.worker.state == "ready", timeout=LONG)
        app.controller.command("start")
        assert app.controller.state is State.RECORDING
        app.controller.command("cancel")
    finally:
        stop_app(app, ui)


def test_a_retry_that_fails_the_same_way_is_told_only_when_the_user_asked_for_it(home, clip, qtbot, monkeypatch):
    monkeypatch.setenv(TEST_AUDIO_ENV, str(clip.path))  # the microphone hears the clip
    settings = Settings(engine="faster-whisper", model=MISSING, device="cpu", language="en", overlay=False)
    app, ui, notices = start_app(settings)
    try:
        qtbot.waitUntil(lambda: app.worker.state == "failed" and bool(notices), timeout=LONG)
        reason = app.engine_problem
        assert notices == [reason], notices

        # A dictation: its failure says why and that the recording is kept; the retry that follows fails the same
        # way, which is not told a third time.
        states = _states(app)
        app.controller.command("start")
        qtbot.waitUntil(lambda: app.controller.state is State.RECORDING, timeout=LONG)
        qtbot.wait(1500)
        app.controller.command("stop")
        qtbot.waitUntil(lambda: states[-2:] in (["starting", "failed"], ["loading", "failed"]), timeout=LONG)
        qtbot.wait(200)  # the controller's notices are queued: let them all arrive
        assert notices.count(reason) == 2, notices
        assert any("kept in History" in n for n in notices), notices
        assert app.engine_problem == reason and app.tray.retry_offered

        # Another dictation within the minute is kept too, but does not load the model yet again.
        before = len(states)
        app.transcribe(load_audio(clip.path))
        qtbot.waitUntil(lambda: len(ui.history.search()) == 2, timeout=LONG)
        qtbot.wait(500)  # the retry would start from the event loop right after the job's failure
        assert len(states) == before and app.worker.state == "failed", states

        # The settings window's banner offers the same retry; asked for, its failure is told.
        ui.show_settings()
        button = ui.settings_window.banner_button
        assert button.isVisibleTo(ui.settings_window) and button.text() == "Try the speech model again"
        del states[:]
        qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
        assert "Trying the speech model again…" in notices
        qtbot.waitUntil(lambda: states[-1:] == ["failed"], timeout=LONG)
        qtbot.wait(200)
        assert notices.count(reason) == 3, notices
        assert button.isVisibleTo(ui.settings_window)  # still offered: the model still cannot run
    finally:
        stop_app(app, ui)


def test_the_settings_window_warns_when_the_language_is_one_the_loaded_model_does_not_know(home, qtbot):
    """Whisper tiny.en knows English only: German chosen beside it is warned about at once, not found out at the
    next dictation; a multilingual model (Whisper base) ends the warning once it has loaded."""
    if not WHISPER_BASE_CT2.exists():
        pytest.skip("test data missing: run `python -m tests.data.build`")
    settings = Settings(engine="faster-whisper", model=str(WHISPER_TINY_EN_CT2), device="cpu", overlay=False)
    app, ui, _notices = start_app(settings)
    try:
        qtbot.waitUntil(lambda: app.worker.state == "ready", timeout=LONG)
        assert app.worker.info["languages"] == ["en"]
        ui.show_settings()
        window = ui.settings_window
        assert "language" not in window.notes  # auto: nothing to warn about
        window.commit("language", "de")
        warning = window.notes["language"]
        assert not warning.isHidden() and "knows only English, not German" in warning.text(), warning.text()
        window.commit("language", "en")
        assert warning.isHidden()
        window.commit("language", "de")
        assert not warning.isHidden()

        window.commit("model", str(WHISPER_BASE_CT2))
        assert warning.isHidden()  # the old model's languages are not the new one's
        qtbot.waitUntil(lambda: app.worker.state == "ready" and app.worker.info["model"] == str(WHISPER_BASE_CT2),
                        timeout=LONG)
        assert app.worker.info["languages"] == list(LANGUAGES) and warning.isHidden()

        window.commit("model", str(WHISPER_TINY_EN_CT2))  # back to English only: said again once it has loaded
        qtbot.waitUntil(lambda: not warning.isHidden(), timeout=LONG)
    finally:
        stop_app(app, ui)
