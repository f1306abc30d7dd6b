"""The clipboard restore waits for the target's real read, never for a fixed delay; and it never
destroys something the user copied meanwhile. Each scenario runs the real Paster and Qt clipboard
in a subprocess on the test X display (see paste_probe.py)."""

import json
import subprocess
import sys

import pytest

from tests.desktop.harness import ROOT
from tests.desktop.paste_probe import TRANSCRIPT


def probe(x_session, scenario: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "tests.desktop.paste_probe", scenario], env=x_session.env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_slow_target_still_gets_the_transcript_and_the_clipboard_comes_back(x_session):
    report = probe(x_session, "slow")
    assert report["reader_got"] == TRANSCRIPT
    assert report["ok"] and report["outcome"] == "pasted" and report["clipboard_after"] == "BEFORE"


def test_a_read_by_another_program_is_not_the_paste(x_session):
    """A clipboard manager (here xclip) reads at once; the target never does: the text is typed instead."""
    report = probe(x_session, "other")
    assert report["other_got"] == TRANSCRIPT, "reads by others are served"
    assert report["reader_got"] is None and report["typed"] == TRANSCRIPT
    assert report["ok"] and report["outcome"] == "typed" and report["clipboard_after"] == "BEFORE"


def test_a_manager_read_served_before_the_paster_goes_on_is_still_told_from_the_paste(x_session):
    """The selection thread can serve a clipboard manager before `offer` returns to the GUI thread; the paster
    must already be listening then, or that read goes unnoticed (and a target's read that early would be lost,
    and its text typed a second time)."""
    report = probe(x_session, "manager_at_once")
    assert report["manager_got"] == TRANSCRIPT and report["reader_got"] == TRANSCRIPT
    assert report["others_noticed"] == 1, "the manager's read, served first, must be seen as not the paste"
    assert report["ok"] and report["outcome"] == "pasted" and report["clipboard_after"] == "BEFORE"


def test_a_paste_nobody_takes_leaves_the_text_on_the_clipboard(x_session):
    report = probe(x_session, "nobody")
    assert not report["ok"] and "paste it yourself" in report["message"] and report["outcome"] == "clipboard"
    assert report["clipboard_after"] == TRANSCRIPT


def test_a_paste_that_breaks_unexpectedly_ends_with_the_text_on_the_clipboard(x_session):
    """An error no paste expects (here the keystroke's X connection closing) must still end the paste: otherwise
    the app stays "pasting", and every dictation after it waits behind it and is never pasted."""
    report = probe(x_session, "broken")
    assert not report["ok"] and report["outcome"] == "clipboard" and "paste it yourself" in report["message"], report
    assert report["clipboard_after"] == TRANSCRIPT


def test_what_the_user_copied_meanwhile_is_not_overwritten(x_session):
    report = probe(x_session, "overwrite")
    assert report["reader_got"] == TRANSCRIPT
    assert report["ok"] and report["clipboard_after"] == "COPIED-LATER"


def test_a_copy_made_as_the_clipboard_is_given_back_survives_a_busy_selection_thread(x_session):
    """The user copies at the moment the paster restores the clipboard, and the selection thread has not yet
    handled the server's news that the clipboard changed hands: asking the thread alone said "still ours", and
    the restore tried to put the old clipboard over the user's copy. (Here the server refused it, since Qt's
    last timestamp predated the copy; a Qt that had seen a later event would have overwritten it.)"""
    report = probe(x_session, "copied_at_restore")
    assert report["reader_got"] == TRANSCRIPT and report["ok"] and report["outcome"] == "pasted"
    assert report["still_ours"] is False, "the paster must know the clipboard is no longer its own"
    assert report["clipboard_after"] == "COPIED-AT-RESTORE"


def test_a_target_that_reads_the_clipboard_as_it_answers_the_ping_does_not_get_the_text_twice(x_session):
    """After the fallback wait the paster asks the target whether it handles its events; one that was busy
    until then reads the clipboard (the paste key's work) and answers together. The answer came in on the
    paster's connection while the read was still news for the selection thread: the text was typed as well as
    pasted, so it stood twice in the document."""
    report = probe(x_session, "woke_at_ping")
    assert report["reader_got"] == TRANSCRIPT
    assert report["typed"] is None, "pasted and typed: the text twice"
    assert report["ok"] and report["outcome"] == "pasted" and report["clipboard_after"] == "BEFORE"


def test_the_clipboard_is_saved_while_the_engine_works_not_on_the_way_to_the_text(x_session):
    """Saving a copied image (its owner asked for every format) cost 25-90 ms between the transcript and the paste
    key. It is read once, before the paste, and what was on the clipboard comes back whole."""
    report = probe(x_session, "early")
    assert report["reader_got"] == TRANSCRIPT and report["ok"] and report["outcome"] == "pasted"
    assert len(report["image_reads_at"]) == 1 and report["image_reads_at"][0] < report["paste_at"]
    assert report["clipboard_after"] == "same", "the image came back, byte for byte"


def test_a_copy_made_after_the_early_save_is_what_comes_back(x_session):
    """The early copy of the clipboard must not serve once the user copied something else before the paste."""
    report = probe(x_session, "early_changed")
    assert report["reader_got"] == TRANSCRIPT and report["ok"]
    assert report["image_reads_at"] == [] or report["image_reads_at"][0] < report["paste_at"]
    assert report["clipboard_after"] == "COPIED-BEFORE-PASTE"


@pytest.mark.parametrize("window_class, keys", [("XTerm", "shift+insert"), ("kitty", "ctrl+shift+v"),
                                                ("Gedit", "ctrl+v"), (None, "ctrl+v")])
def test_paste_keys_by_window_class(window_class, keys):
    from app.desktop.paste import paste_keys

    assert paste_keys("auto", "x11", window_class) == keys
    assert paste_keys("auto", "macos", window_class) == "cmd+v"
    assert paste_keys("shift+insert", "x11", window_class) == "shift+insert"
