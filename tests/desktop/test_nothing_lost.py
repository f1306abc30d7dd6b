"""Nothing recorded is lost, and nothing is left on screen: silence, a model that cannot load, and
the user's choice to refuse recording then. Real app, real worker, real X session."""

import json
import sys

import numpy as np
import pytest
import soundfile as sf

from tests.data import WHISPER_TINY_EN
from tests.desktop.conftest import APP_SETTINGS
from tests.desktop.harness import CLIP_END, App, hold_and_release, wait_for
from tests.desktop.test_dictation import MAX_WER, SHOW_DESKTOP, wer

LONG_WAIT = 180
MISSING_MODEL = "/nonexistent/whisper-model-folder"


def overlay_visible(session) -> bool:
    return bool(session.xdotool("search", "--onlyvisible", "--name", "^Dictation overlay$").strip())


def test_silence_leaves_no_overlay_behind(x_session, dictation_app, target, tmp_path):
    silence = tmp_path / "quiet.wav"
    sf.write(silence, np.random.default_rng(3).standard_normal(3 * 16000).astype(np.float32) * 0.002, 16000)
    target.focus()
    notices = dictation_app.count("No speech was heard")
    hold_and_release(x_session, dictation_app, silence, ("space", "shift", "ctrl"))
    wait_for(lambda: dictation_app.count("No speech was heard") > notices, "the no-speech notice", LONG_WAIT)
    dictation_app.wait_idle()
    wait_for(lambda: not overlay_visible(x_session), "the overlay to go (it stayed on Transcribing)", 10)


def second_app(x_session, tmp_path, env: dict | None = None, **settings) -> App:
    """An app of its own (own settings, history and hotkey), started; its worker may fail to load."""
    workdir = tmp_path / "app2"
    workdir.mkdir(exist_ok=True)
    app = App(x_session, workdir, {**APP_SETTINGS, "hotkey": "<ctrl>+<alt>+k", **settings})
    app.env.update(env or {})
    app.start()
    return app


# The model cannot run: a folder that is gone, or the default Hub model on a first start offline.
UNUSABLE = {"missing folder": ({"model": MISSING_MODEL}, {}),
            "offline default model": ({"model": ""}, {"HF_HUB_OFFLINE": "1"})}


def dictate_by_command(app, clip) -> None:
    app.speak(clip)
    played = app.count(CLIP_END)
    app.command("toggle")
    app.wait_spoken(played, LONG_WAIT)
    app.command("toggle")


@pytest.mark.parametrize("unusable", UNUSABLE)
def test_a_recording_made_while_the_model_cannot_load_is_kept_and_transcribed_once_it_does(x_session, tmp_path,
                                                                                            clips, unusable):
    settings, env = UNUSABLE[unusable]
    app = second_app(x_session, tmp_path, {**env, "HF_HOME": str(tmp_path / "empty-hf-home")}, **settings)
    try:
        wait_for(lambda: app.status()["worker"] == "failed", "the model load to fail", LONG_WAIT)
        dictate_by_command(app, clips["espeak-en-02"]["path"])
        entry = wait_for(lambda: (h := app.history()) and h[-1], "the recording in the history", LONG_WAIT)
        assert entry["outcome"] == "not_transcribed" and entry["text"] == ""
        assert app.count("is kept in History and will be transcribed") == 1
        wait_for(lambda: app.status()["state"] in ("idle", "error") and app.status()["queued"] == 0, "the app idle")
        wait_for(lambda: not overlay_visible(x_session), "the overlay to go", 15)
    finally:
        app.stop()
    # The model is fixed (here: in the settings file, then a restart): the kept recording is transcribed.
    settings_file = app.config_home / "diffusion-dictate" / "settings.json"
    settings_file.write_text(json.dumps({**json.loads(settings_file.read_text()), "model": str(WHISPER_TINY_EN)}))
    app.start()
    try:
        done = wait_for(lambda: (h := app.history()) and h[-1]["outcome"] == "transcribed_later" and h[-1],
                        "the kept recording to be transcribed", LONG_WAIT)
        assert done["id"] == entry["id"] and wer(clips["espeak-en-02"]["text"], done["text"]) <= MAX_WER, done
        assert len(app.history()) == 1
        assert app.count("is transcribed: ") == 1
        assert app.status()["state"] == "idle"
    finally:
        app.stop()


def test_refuse_means_no_recording_and_a_reason(x_session, tmp_path, clips):
    app = second_app(x_session, tmp_path, model=MISSING_MODEL, unusable_model="refuse")
    try:
        wait_for(lambda: app.status()["worker"] == "failed", "the model load to fail", LONG_WAIT)
        app.speak(clips["espeak-en-02"]["path"])
        app.command("toggle")
        wait_for(lambda: app.count("Not recording: "), "the reason not to record")
        status = app.status()
        assert status["state"] == "error" and status["queued"] == 0
        assert app.count("test audio source") == 0 and app.history() == []
        assert "The model is being tried again; to fix it, see Settings" in app.log()
        wait_for(lambda: app.count("trying the speech model again"), "the refused press to try the model again")
    finally:
        app.stop()


def test_typing_with_no_window_focused_leaves_the_text_on_the_clipboard_and_says_so(x_session, tmp_path, clips):
    """With "Insert text by: type", the keys went to the window manager's own window and counted as typed."""
    clip = clips["espeak-en-02"]
    app = second_app(x_session, tmp_path, paste_method="type")
    x_session.run(sys.executable, "-c", SHOW_DESKTOP, "1")
    try:
        wait_for(lambda: not x_session.xdotool("getactivewindow").strip(), "no window to be active")
        wait_for(lambda: app.status()["worker"] == "ready", "the speech worker", LONG_WAIT)
        dictate_by_command(app, clip["path"])
        wait_for(lambda: app.count("No window had the keyboard focus"), "the notice", LONG_WAIT)
        assert wer(clip["text"], x_session.clipboard()) <= MAX_WER, "the text must be left for the user to paste"
        assert wait_for(lambda: (h := app.history()) and h[-1]["outcome"], "the outcome") == "clipboard"
    finally:
        x_session.run(sys.executable, "-c", SHOW_DESKTOP, "0")
        app.stop()


@pytest.fixture(autouse=True)
def _tiny_model_exists():
    assert WHISPER_TINY_EN.exists(), "test data missing: run `python -m tests.data.build`"
