"""The hotkey is grabbed, not overheard: the focused window gets none of its key events.

Held for seconds (X auto-repeat running) over a default xterm and over a Qt editor, released in
every order, with the real app; and the grab's own rules through the real HotkeyListener
(hotkey_probe.py): modifier-only hotkeys, NumLock, the cancel key only while armed, and a
combination another program holds.
"""

import json
import queue
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import soundfile as sf

from tests.desktop.harness import CLIP_END, PYTHON, ROOT, hold_and_release, wait_for

LONG_WAIT = 180
# Release orders: each key let go 0.4 s after the one before, so the keys still held auto-repeat.
ORDERS = {"space first": ("space", "ctrl", "shift"), "ctrl first": ("ctrl", "shift", "space"),
          "shift first": ("shift", "space", "ctrl")}


@pytest.fixture(scope="module")
def quiet_room(tmp_path_factory):
    path = tmp_path_factory.mktemp("quiet") / "quiet-4s.wav"
    sf.write(path, np.random.default_rng(2).standard_normal(4 * 16000).astype(np.float32) * 0.002, 16000)
    return path


@pytest.mark.parametrize("order", ORDERS)
def test_a_default_xterm_gets_no_byte_of_a_held_hotkey(x_session, dictation_app, plain_terminal, quiet_room, order):
    plain_terminal.focus()
    plain_terminal.clear()
    notices = dictation_app.count("No speech was heard")
    hold_and_release(x_session, dictation_app, quiet_room, ORDERS[order])
    wait_for(lambda: dictation_app.count("No speech was heard") > notices, "the no-speech notice", LONG_WAIT)
    dictation_app.wait_idle()
    x_session.xdotool("type", "--delay", "20", "end")  # the terminal is alive and still reads its keys
    wait_for(lambda: plain_terminal.received().endswith(b"end"), "typed text in the terminal")
    assert plain_terminal.received() == b"end", "the held hotkey leaked into the terminal"


@pytest.mark.parametrize("editor", ["target", "gtk_editor"], ids=["Qt", "GTK"])
@pytest.mark.parametrize("order", ORDERS)
def test_an_editor_gets_exactly_the_transcript_in_every_release_order(x_session, dictation_app, clips, order, editor,
                                                                      request):
    window = request.getfixturevalue(editor)
    window.clear()
    x_session.set_clipboard("copied before")
    done = len(dictation_app.transcripts())
    hold_and_release(x_session, dictation_app, clips["espeak-en-03"]["path"], ORDERS[order], hold_s=1.0)
    wait_for(lambda: len(dictation_app.transcripts()) > done, "the transcript", LONG_WAIT)
    transcript = dictation_app.transcripts()[-1].strip()
    assert transcript
    dictation_app.wait_idle()
    wait_for(lambda: window.text() == transcript, lambda: f"exactly {transcript!r} in the editor (it has "
                                                          f"{window.text()!r})", LONG_WAIT, interval=0.5)
    assert x_session.clipboard() == "copied before"
    # Pasted, not typed after the paste's wait ran out: a paste sent while a key of the hotkey is still
    # down goes into the app's own keyboard grab, and the user waits 2.5 s for the typed fallback.
    assert dictation_app.history()[-1]["outcome"] == "pasted"


def test_two_dictations_from_a_real_keyboard_paste_exactly_their_text(x_session, dictation_app, clips, target):
    """The hotkey held on the X server's keyboard device, as a person holds it (xdotool's keys share the
    app's XTest device). The first dictation: Space let go first, Ctrl and Shift after the paste went out;
    the paste lifts them and must press nothing back. The second: every key let go before its paste.
    A modifier pressed back through XTest stayed down on XTest's device once the fingers let go, so the
    second paste's Ctrl press was dropped as a duplicate: a "v" landed in the document, and the text was
    typed 2.5 s later."""
    keyboard = x_session.keyboard
    target.clear()
    texts = []
    for clip, held_through_paste in (("espeak-en-03", True), ("espeak-en-04", False)):
        done, sent = len(dictation_app.transcripts()), dictation_app.count("paste: sent")
        dictation_app.speak(clips[clip]["path"])
        played = dictation_app.count(CLIP_END)
        keyboard.down("ctrl+shift+space")
        try:
            dictation_app.wait_recording("the hotkey")
            dictation_app.wait_spoken(played)
            if held_through_paste:
                keyboard.up("space")
                dictation_app.wait(lambda: dictation_app.count("paste: sent") > sent, "the paste key", LONG_WAIT)
                time.sleep(0.2)
        finally:
            keyboard.up("shift+ctrl+space")  # a key already up on this device: the server drops its release
        texts.append(dictation_app.wait(lambda: dictation_app.transcripts()[done:], "the transcript",
                                        LONG_WAIT)[0].strip())
        dictation_app.wait_idle()
    expected = " ".join(texts)  # the second continues the first, one space between
    wait_for(lambda: target.text() == expected,
             lambda: f"exactly {expected!r} in the editor (it has {target.text()!r})")
    assert [d["outcome"] for d in dictation_app.history()[-2:]] == ["pasted", "pasted"]


def test_escape_is_taken_only_while_recording(x_session, dictation_app, plain_terminal, clips):
    plain_terminal.focus()
    plain_terminal.clear()
    dictation_app.speak(clips["espeak-en-04"]["path"])
    cancels = dictation_app.count("Dictation cancelled")
    x_session.xdotool("key", "ctrl+shift+space")  # a tap starts a dictation (hybrid mode)
    wait_for(lambda: dictation_app.status()["state"] == "recording", "recording to start")
    time.sleep(0.3)  # the grab of Esc follows the state change
    x_session.xdotool("key", "Escape")
    wait_for(lambda: dictation_app.count("Dictation cancelled") > cancels, "the cancel notice")
    dictation_app.wait_idle()
    assert plain_terminal.received() == b"", "Esc reached the terminal while it cancelled the dictation"
    time.sleep(0.3)
    x_session.xdotool("key", "Escape")  # idle: Esc is the terminal's again
    wait_for(lambda: plain_terminal.received() == b"\x1b", "Esc in the terminal once idle")
    assert dictation_app.count("Dictation cancelled") == cancels + 1


class Probe:
    """hotkey_probe.py running on the test display; `expect(event)` waits for its next such line."""

    def __init__(self, session, combo: str) -> None:
        self.proc = subprocess.Popen([PYTHON, "-m", "tests.desktop.hotkey_probe", combo], env=session.env, cwd=ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [self.lines.put(json.loads(x)) for x in self.proc.stdout], daemon=True).start()

    def expect(self, event: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            if line["event"] == event:
                return line
            if line["event"] != "done":
                raise AssertionError(f"expected {event}, got {line}")

    def command(self, text: str) -> None:
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()
        self.expect("done")
        time.sleep(0.2)  # the grab thread applies it

    def quiet(self) -> bool:
        time.sleep(0.3)
        return self.lines.empty()

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def probe(x_session):
    probes = []

    def start(combo: str) -> Probe:
        probes.append(Probe(x_session, combo))
        return probes[-1]

    yield start
    for p in probes:
        p.close()


def test_a_modifier_only_hotkey_is_held_and_released(x_session, probe):
    p = probe("<alt_r>")
    p.expect("ready")
    x_session.keyboard.down("Alt_R")
    p.expect("pressed")
    time.sleep(1.0)  # auto-repeat of the modifier must not look like a release
    assert p.quiet()
    x_session.keyboard.up("Alt_R")
    p.expect("released")
    x_session.keyboard.down("Alt_L")  # the other Alt is not the hotkey
    x_session.keyboard.up("Alt_L")
    assert p.quiet()


def test_a_hotkey_of_two_modifiers_starts_whichever_comes_last(x_session, probe):
    p = probe("<ctrl>+<alt>")
    p.expect("ready")
    for first, second in (("Control_L", "Alt_L"), ("Alt_L", "Control_L")):
        x_session.keyboard.down(first)
        assert p.quiet(), "one of the two is not the hotkey yet"
        x_session.keyboard.down(second)
        p.expect("pressed")
        x_session.keyboard.up(first)
        p.expect("released")
        x_session.keyboard.up(second)
        assert p.quiet()


def test_the_hotkey_works_with_num_lock_and_caps_lock_on(x_session, probe):
    p = probe("<ctrl>+<alt>+j")  # the session's app holds Ctrl+Shift+Space
    p.expect("ready")
    x_session.xdotool("key", "Num_Lock", "key", "Caps_Lock")
    try:
        x_session.xdotool("keydown", "ctrl+alt+j")
        p.expect("pressed")
        x_session.xdotool("keyup", "j+alt+ctrl")
        p.expect("released")
    finally:
        x_session.xdotool("key", "Num_Lock", "key", "Caps_Lock")


def test_escape_is_grabbed_only_while_armed(x_session, probe):
    p = probe("<ctrl>+<alt>+j")
    p.expect("ready")
    x_session.xdotool("key", "Escape")
    assert p.quiet(), "Esc must not be caught while not recording"
    p.command("arm")
    x_session.xdotool("key", "Escape")
    p.expect("cancel")
    p.command("disarm")
    x_session.xdotool("key", "Escape")
    assert p.quiet()


def test_a_combination_another_program_holds_is_reported_and_another_one_works(x_session, probe):
    blocker = subprocess.Popen([sys.executable, "-m", "tests.desktop.key_blocker", "d", str(4 | 8)],  # Ctrl+Alt+D
                               env=x_session.env, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert blocker.stdout.readline().strip() == "grabbed"
        p = probe("<ctrl>+<alt>+d")
        message = p.expect("unavailable")["message"]
        assert "Ctrl+Alt+D is already taken by another program" in message and "Settings" in message
        p.command("combo <ctrl>+<alt>+e")
        p.expect("ready")
        x_session.xdotool("key", "ctrl+alt+e")
        p.expect("pressed")
        p.expect("released")
    finally:
        blocker.kill()
        blocker.wait(10)
