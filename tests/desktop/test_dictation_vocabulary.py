"""End to end on a real X11 desktop with the speaker's words (issue 18): a vocabulary, a replacement and
spoken punctuation set in the settings file, espeak speech through the recorder's audio seam, the real
worker (Whisper tiny.en on faster-whisper, prompted with the vocabulary) and the text pipeline in the
app; the target window must get the finished text, its line break pasted through the clipboard.

A second app instance with its own settings folder and hotkey, so it runs beside the other desktop
tests' app without either reacting to the other's key."""

import sqlite3
import subprocess
import sys

import pytest
import soundfile as sf

from tests.data.build import synthesize
from tests.desktop.conftest import APP_SETTINGS, start_app
from tests.desktop.harness import CLIP_END, ROOT, wait_for
from tests.desktop.test_dictation import LONG_WAIT, pasted

SENTENCE = "Please deploy the new service on Kubernetes. New line. Thanks a lot."
SETTINGS = {**APP_SETTINGS, "hotkey": "<ctrl>+<alt>+v", "vocabulary": ["Kubernetes", "Nguyen"],
            "replacements": [["deploy", "ship"]], "spoken_punctuation": True}


@pytest.fixture(scope="module")
def words_app(x_session):
    workdir = x_session.workdir / "vocabulary"
    workdir.mkdir(exist_ok=True)
    app = start_app(x_session, workdir, SETTINGS)
    yield app
    app.stop()


def test_a_dictation_pastes_the_corrected_text_with_its_line_break(x_session, words_app, target, tmp_path):
    wav = tmp_path / "kubernetes.wav"
    sf.write(wav, synthesize(SENTENCE, "en-us", tmp_path), 16_000)
    target.clear()
    x_session.set_clipboard("copied before dictating")
    words_app.speak(wav)
    played = words_app.count(CLIP_END)
    words_app.command("toggle")
    words_app.wait_spoken(played, LONG_WAIT)
    words_app.command("toggle")
    text = pasted(target)
    words_app.wait_idle()
    # Without the vocabulary tiny.en hears "Cuba, Nites" here (tests/test_vocabulary_speech.py measures it).
    assert "Kubernetes" in text and "Please ship the new service" in text, text
    assert "\n" in text and "new line" not in text.lower(), text  # "new line" became a line break...
    assert "paste: sent ctrl+v" in words_app.log(), "...pasted through the clipboard, not typed"
    assert target.text() == text and x_session.clipboard() == "copied before dictating"
    db = words_app.data_home / "diffusion-dictate" / "history.sqlite3"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        final, heard = con.execute("SELECT text, raw_text FROM dictations ORDER BY id DESC LIMIT 1").fetchone()
    assert final == text.strip(), "the history keeps what was pasted..."
    assert "deploy" in heard and "\n" not in heard, "...and what the engine wrote, before the text pipeline"


def test_typing_a_transcript_with_line_breaks_presses_return(x_session, target):
    """The typing path (Insert text by: type, and the fallback for a window that reads no paste): XTest
    presses Return for each line break, so the target gets the same lines as a paste would give it."""
    target.clear()
    typed = "Dear team,\nthe build is green.\n\nThanks"
    code = f"from app.desktop.x11 import X11Keys; X11Keys().type_text({typed!r})"
    subprocess.run([sys.executable, "-c", code], env=x_session.env, cwd=ROOT, check=True, timeout=60)
    assert wait_for(lambda: target.text() == typed and target.text(), "the typed lines in the target") == typed
