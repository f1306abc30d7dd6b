"""Two dictations in a row on a real X11 desktop: the second gets one space where it goes on right after
the first, none once the user has pressed Enter (the X server's RECORD extension tells the app; the
hotkey's own keys, grabbed, do not count), and its first word the case its place in the text wants."""

import soundfile as sf

from tests.data.build import synthesize
from tests.desktop.test_dictation import LONG_WAIT, MAX_WER, speak_and_hold, wer
from tests.desktop.harness import wait_for


def dictate(session, app, target, clip) -> str:
    """One held-hotkey dictation; the target's whole text once it has arrived."""
    before = target.text()
    speak_and_hold(session, app, clip["path"])
    wait_for(lambda: target.text() != before and target.text(), "the dictation's text", LONG_WAIT)
    app.wait_idle()
    return target.text()


def test_a_dictation_that_goes_on_gets_one_space_and_a_new_line_none(x_session, dictation_app, target, clips):
    first, second, third = clips["espeak-en-02"], clips["espeak-en-05"], clips["espeak-en-08"]
    target.clear()
    one = dictate(x_session, dictation_app, target, first)
    assert wer(first["text"], one) <= MAX_WER and one == one.strip(), one

    two = dictate(x_session, dictation_app, target, second)
    assert two.startswith(one + " ") and not two[len(one) + 1].isspace(), repr(two)
    assert wer(second["text"], two[len(one) + 1:]) <= MAX_WER, two

    x_session.xdotool("key", "Return")  # the user starts a new line: the next text starts it
    wait_for(lambda: target.text() == two + "\n", "the new line")
    three = dictate(x_session, dictation_app, target, third)
    assert three.startswith(two + "\n") and not three[len(two) + 1].isspace(), repr(three)
    assert wer(third["text"], three[len(two) + 1:]) <= MAX_WER, three


def test_a_dictation_the_engine_began_in_lower_case_after_a_full_stop_starts_with_a_capital(x_session, dictation_app,
                                                                                             target, clips, tmp_path):
    """Whisper writes a short piece like "and then we went home" as it hears it, in lower case; after the
    previous dictation's full stop the document must not read "meeting. and then"."""
    piece = tmp_path / "and-then.wav"
    sf.write(piece, synthesize("and then we went home", "en-us", tmp_path), 16000)
    target.clear()
    one = dictate(x_session, dictation_app, target, clips["espeak-en-02"])
    assert one.endswith("."), one
    two = dictate(x_session, dictation_app, target, {"path": piece})
    engine = dictation_app.transcripts()[-1].strip()
    assert engine.startswith("and "), f"the test's premise: Whisper tiny.en began this piece in lower case ({engine!r})"
    assert two == one + " A" + engine[1:], repr(two)
