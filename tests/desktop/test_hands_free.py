"""Hands-free: a tap starts the dictation, and the silence after the speech ends it (Keys → Stop after
silence). Real app, real worker (Whisper tiny.en), real X session; the clip is followed by silence, as
the recorder's audio seam plays it, and no key ends the dictation."""

from tests.desktop.harness import wait_for
from tests.desktop.test_dictation import MAX_WER, wer
from tests.desktop.test_nothing_lost import LONG_WAIT, second_app


def test_a_tap_then_silence_ends_the_dictation_by_itself(x_session, tmp_path, clips, target):
    app = second_app(x_session, tmp_path, auto_stop_s=1)
    try:
        app.wait_ready()
        clip = clips["espeak-en-05"]
        target.clear()
        app.speak(clip["path"])
        x_session.xdotool("key", "ctrl+alt+k")  # one tap: hybrid mode keeps recording after the release
        wait_for(lambda: app.status()["state"] == "recording", "the recording to start")
        text = wait_for(lambda: target.text().strip(), "the text, with no second tap", LONG_WAIT)
        app.wait_idle()
        assert wer(clip["text"], text) <= MAX_WER, text
        assert app.history()[-1]["outcome"] == "pasted"
        assert app.count("state: recording") == 1, "one dictation, not a second one started by the silence"
    finally:
        app.stop()
