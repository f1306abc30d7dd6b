"""A paste counts when the target read it: real targets, a clipboard manager beside them, the history.

The targets are a default xterm (which pastes PRIMARY with Shift+Insert and ignores Ctrl+Shift+V)
and the Qt editor; the clipboard manager is a PySide6 script that reads every new clipboard, the
read that used to be taken for the paste. The history's outcome must say what the target got.
"""

import contextlib
import json
import os
import signal
import subprocess
import time

import pytest

from tests.desktop.harness import PYTHON, ROOT, hold_and_release, wait_for

LONG_WAIT = 180


@pytest.fixture(scope="module")
def clipboard_manager(x_session):
    log = x_session.workdir / "clipboard-manager.jsonl"
    log.write_text("")
    proc = x_session.spawn([PYTHON, "-m", "tests.desktop.clipboard_manager", str(log)], "clipboard-manager")
    wait_for(lambda: log.read_text().strip(), "the clipboard manager to start")
    yield lambda: [json.loads(line) for line in log.read_text().splitlines()]
    proc.kill()


def dictate(x_session, app, clip) -> tuple[str, dict]:
    """Hold the hotkey over `clip`; return the transcript and its history entry once the paste is done."""
    done = len(app.transcripts())
    hold_and_release(x_session, app, clip, ("space", "shift", "ctrl"))
    wait_for(lambda: len(app.transcripts()) > done, "the transcript", LONG_WAIT)
    app.wait_idle()
    transcript = app.transcripts()[-1].strip()
    entry = wait_for(lambda: (h := app.history()) and h[-1]["text"] == transcript and h[-1]["outcome"] and h[-1],
                     "the history entry with its outcome")
    return transcript, entry


def test_a_default_xterm_gets_exactly_the_transcript(x_session, dictation_app, plain_terminal, clips):
    plain_terminal.focus()
    plain_terminal.clear()
    x_session.set_clipboard("the user's clipboard")
    transcript, entry = dictate(x_session, dictation_app, clips["espeak-en-07"]["path"])
    assert transcript
    wait_for(lambda: plain_terminal.received().decode() == transcript,
             lambda: f"exactly {transcript!r} in the terminal (it has {plain_terminal.received()!r})")
    assert entry["outcome"] == "pasted"
    assert "paste: sent shift+insert to XTerm" in dictation_app.log()
    assert x_session.clipboard() == "the user's clipboard"


# Each target its own clip, so that what the manager logged can be told apart run by run.
TARGETS = {"plain_terminal": "espeak-en-08", "target": "espeak-en-06", "gtk_editor": "espeak-en-05"}


@pytest.mark.parametrize("which", TARGETS, ids=["default xterm", "Qt", "GTK"])
def test_with_a_clipboard_manager_reading_the_history_says_what_the_target_got(
        x_session, dictation_app, clips, clipboard_manager, which, request):
    window = request.getfixturevalue(which)
    window.focus()
    window.clear()
    x_session.set_clipboard("kept by the user")
    others = dictation_app.count(r"\(not the target\) read the clipboard")
    seen_before = len(clipboard_manager())
    transcript, entry = dictate(x_session, dictation_app, clips[TARGETS[which]]["path"])
    received = window.received().decode() if which == "plain_terminal" else window.text()
    assert entry["outcome"] == "pasted" and received == transcript == entry["text"]
    assert x_session.clipboard() == "kept by the user"
    if transcript in clipboard_manager()[seen_before:]:  # it read the transcript while the app served it
        assert dictation_app.count(r"\(not the target\) read the clipboard") > others, "its read was not the paste"


def test_a_window_that_reads_no_paste_gets_the_text_typed_unicode_and_all(x_session, target, clipboard_manager):
    """The Qt editor ignores Ctrl+Shift+V; the manager's read must not count, so the text is typed (XTest,
    spare keycodes lent to the characters the layout lacks)."""
    text = "Grüße aus Köln — 日本語 ✓ ok"
    target.clear()
    done = subprocess.run([PYTHON, "-m", "tests.desktop.paste_probe", "focused", "ctrl+shift+v", text],
                          env=x_session.env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["ok"] and report["outcome"] == "typed", report
    wait_for(lambda: target.text() == text, lambda: f"exactly {text!r} in the editor (it has {target.text()!r})")
    assert report["clipboard_after"] == "BEFORE"
    assert text in clipboard_manager()


def type_with_xtest(x_session, text: str) -> None:
    """The app's XTest typing (the paste's fallback), from a process of its own on the test display."""
    code = f"from app.desktop.x11 import X11Keys; X11Keys().type_text({text!r})"
    done = subprocess.run([PYTHON, "-c", code], env=x_session.env, cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr


@contextlib.contextmanager
def busy(window, seconds: float = 0.3):
    """The window's program does not read its events for the block's length, and `seconds` at least (a loaded
    machine, an app that is saving): what the server sends it meanwhile waits, and is handled once it runs again."""
    pid = int(window.session.xdotool("getwindowpid", window.window_id).strip())
    until = time.monotonic() + seconds
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        time.sleep(max(0.0, until - time.monotonic()))
        os.kill(pid, signal.SIGCONT)


def test_a_busy_window_gets_every_typed_character_the_layout_lacks(x_session, target):
    """Characters the layout lacks are typed on keycodes lent to them for the moment. A window that handles the
    keys later than the lending lasted looked them up in the keymap as it was by then: with the keycodes
    already given back, "Grüße aus Köln ✓" came out as "Gre aus Kln ". The typed fallback runs exactly when
    the target is slow to take a paste."""
    text = "Grüße aus Köln — 日本語 ✓ ok"
    target.clear()
    with busy(target):
        type_with_xtest(x_session, text)
    wait_for(lambda: target.text() == text, f"exactly {text!r} in the editor", 20)


def test_typed_text_keeps_its_case_with_caps_lock_on(x_session, target):
    """Caps Lock on inverted every letter the fallback typed ("hELLO wORLD"); it is off for the typing, and on
    again after it, as the user left it."""
    text = "Hello World, ok? Ünïcode ✓"
    target.clear()
    x_session.xdotool("key", "Caps_Lock")
    try:
        type_with_xtest(x_session, text)
        wait_for(lambda: target.text() == text, f"exactly {text!r} in the editor", 20)
        x_session.xdotool("type", "x")  # still on for the user's own keys
        wait_for(lambda: target.text() == text + "X", "Caps Lock still on for the user's keys", 20)
    finally:
        x_session.xdotool("key", "Caps_Lock")


def test_a_window_busy_for_longer_than_the_paste_waits_gets_the_text_once(x_session, target):
    """A target that takes its paste key late (busy for 4 s, longer than `Paster.FALLBACK_MS`) is busy, not
    ignoring the paste: typing the text then put the user's old clipboard in front of it ("BEFORECan you
    send..."), the late Ctrl+V pasting what the clipboard held back by then."""
    text = "Can you send me the slides from last week?"
    target.clear()
    with busy(target, 4.0):
        paste = subprocess.Popen([PYTHON, "-m", "tests.desktop.paste_probe", "focused", "ctrl+v", text, "3"],
                                 env=x_session.env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = paste.communicate(timeout=120)
    assert paste.returncode == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    wait_for(lambda: target.text() == text, f"exactly {text!r} in the editor", 20)
    assert report["ok"] and report["outcome"] == "pasted" and report["clipboard_after"] == "BEFORE", report
