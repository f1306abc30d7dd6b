"""The space between two dictations in a row: where the texts meet, and what counts as the user moving
the cursor. The whole path on a real X11 desktop (RECORD, grabs, the paste) is in
tests/desktop/test_space_between.py."""

from __future__ import annotations

import time

import pytest
from Xlib import X

from app.desktop.continuation import Continuation, joining_space
from app.desktop.input_activity import LATE_S, InputActivity


@pytest.mark.parametrize(("previous", "text", "space"), [
    ("Hello Anna.", "How are you?", " "),
    ("and then", "we left", " "),
    ("Ça va ?", "Oui.", " "),
    ("नमस्ते।", "आप कैसे हैं?", " "),
    ("Hello Anna.", ", and Ben.", ""),  # a closing mark joins the word before it
    ("Hello Anna.", "...", ""),
    ("first line\n", "Second", ""),  # the previous ended the line: the new text starts it
    ("a list: (", "one", ""),
    ("Hello Anna. ", "How", ""),  # a space is there already
    ("我们明天见。", "好的。", ""),  # Mandarin: no spaces between words or sentences
    ("Meeting at ten", "明天", ""),
    ("", "Hello", ""),
    ("Hello", "", ""),
])
def test_where_two_texts_meet(previous, text, space):
    assert joining_space(previous, text) == space


SPACE, CTRL, SHIFT, A_KEY = 65, 37, 50, 38
HOTKEY = frozenset({(SPACE, X.ControlMask | X.ShiftMask), (SPACE, X.ControlMask | X.ShiftMask | X.LockMask)})


def activity() -> InputActivity:
    watched = InputActivity(lambda: HOTKEY)
    watched._modifiers = {CTRL, SHIFT}  # what start() reads from the X server's modifier mapping
    return watched


def test_only_keys_and_clicks_that_can_move_the_cursor_count():
    watched = activity()
    for kind, detail, state in [(X.KeyPress, CTRL, 0), (X.KeyPress, SHIFT, X.ControlMask),  # modifiers alone
                                (X.KeyPress, SPACE, X.ControlMask | X.ShiftMask | X.LockMask),  # the hotkey...
                                (X.KeyPress, A_KEY, X.ControlMask | X.ShiftMask),  # ...held: its keys are ours
                                (X.KeyPress, SPACE, X.ControlMask | X.ShiftMask),  # auto-repeat
                                (X.KeyRelease, SPACE, X.ControlMask | X.ShiftMask),
                                (X.ButtonPress, 4, 0), (X.ButtonPress, 5, 0)]:  # the scroll wheel
        watched.event(kind, detail, state)
    assert watched.count == 0
    watched.event(X.KeyPress, SPACE, 0)  # the hotkey's key without its modifiers: typed into the window
    watched.event(X.KeyPress, A_KEY, 0)
    watched.event(X.ButtonPress, 1, 0)
    assert watched.count == 3


def test_our_own_paste_is_not_the_user_typing(monkeypatch):
    watched = activity()
    continuation = Continuation(watched)
    continuation.pasting()
    watched.event(X.KeyPress, 55, X.ControlMask)  # our Ctrl+V
    continuation.pasted(window=7, text="Hello Anna.", typed=True)
    watched.event(X.KeyPress, 55, 0)  # a typed key that reached the monitor a little late
    assert continuation.space_for(7, "How are you?") == " "
    assert continuation.space_for(8, "How are you?") == ""  # another window
    assert continuation.space_for(0, "How are you?") == ""  # a window nobody could name

    now = time.monotonic()
    monkeypatch.setattr("app.desktop.input_activity.time.monotonic", lambda: now + LATE_S + 1)
    watched.event(X.KeyPress, 36, 0)  # the user presses Enter
    assert continuation.space_for(7, "How are you?") == ""


def test_a_key_right_after_a_pasted_text_counts():
    """A paste keystroke was sent 150 ms before the paste is over: no grace, an Enter at once counts."""
    watched = activity()
    continuation = Continuation(watched)
    continuation.pasting()
    continuation.pasted(window=7, text="Hello Anna.")
    watched.event(X.KeyPress, 36, 0)
    assert continuation.space_for(7, "How are you?") == ""


def test_a_paste_that_failed_continues_nothing():
    continuation = Continuation(activity())
    continuation.pasting()
    continuation.pasted(window=7, text=None)
    assert continuation.space_for(7, "How are you?") == ""
    assert Continuation(None).space_for(7, "How are you?") == ""  # no monitor (Wayland, macOS, Windows)
