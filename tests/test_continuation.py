"""Two dictations in a row: the space where the texts meet, the case of the second one's first word, and
what counts as the user moving the cursor. The whole path on a real X11 desktop (RECORD, grabs, the paste,
real speech) is in tests/desktop/test_space_between.py."""

from __future__ import annotations

import time

import pytest
from Xlib import X

from app.desktop.continuation import Continuation, joining_space
from app.desktop.input_activity import LATE_S, InputActivity
from app.text.sentence_case import continue_case


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


@pytest.mark.parametrize(("previous", "text", "language", "joined"), [
    # after a sentence's end, a first word the engine wrote in lower case is capitalised
    ("Start without me.", "and I'm great.", "en", "And I'm great."),
    ("Can you send me the slides?", "from last week.", "en", "From last week."),
    ("Wow!", "that was fast.", "en", "That was fast."),
    ('He said "stop."', "then he left.", "en", "Then he left."),
    ("first line\n", "second line", "en", "Second line"),
    ("¿Dónde estás?", "¿vienes hoy?", "es", "¿Vienes hoy?"),
    ("Ça va ?", "oui, merci.", "fr", "Oui, merci."),
    # ...but not after an abbreviation's dot, an initial, a German ordinal or an ellipsis, nor a word with a
    # capital inside, nor an address
    ("We invited Mr.", "and Mrs. Smith.", "en", "and Mrs. Smith."),
    ("Das steht z. B.", "in der Mail.", "de", "in der Mail."),
    ("Wir treffen uns am 10.", "und 11. Mai.", "de", "und 11. Mai."),
    ("I was thinking...", "maybe tomorrow.", "en", "maybe tomorrow."),
    ("I bought a new phone.", "iPhone works well.", "en", "iPhone works well."),
    ("Write to me.", "ana@example.org is best.", "en", "ana@example.org is best."),
    ("Done.", "Anna will call.", "en", "Anna will call."),
    # inside a sentence, a capital that only the engine's start put there goes, for words that are never names
    ("We met with the client on Tuesday and", "They agreed to extend it.", "en", "they agreed to extend it."),
    ("Hello Anna,", "The report is ready.", "en", "the report is ready."),
    ("The main problem is", "A lack of memory.", "en", "a lack of memory."),
    ("Ich glaube", "Dass es klappt.", "de", "dass es klappt."),
    ("Je pense", "Que oui.", "fr", "que oui."),
    ("Creo", "Que sí.", "es", "que sí."),
    ("I think", "I can.", "en", "I can."),  # "I" stays
    ("Tell it to", "Anna tomorrow.", "en", "Anna tomorrow."),  # a name stays
    ("Können", "Sie mir helfen?", "de", "Sie mir helfen?"),  # the polite "Sie" stays
    ("Ich habe gestern", "Brot gekauft.", "de", "Brot gekauft."),  # a German noun stays
    ("We use", "IT for that.", "en", "IT for that."),  # an all-capitals word stays
    ("We met at", "The Hague.", "xx", "The Hague."),  # a language without word lists: nothing lowered
    # no case to change
    ("我们明天见。", "好的。", "zh", "好的。"),
    ("नमस्ते", "आप कैसे हैं?", "hi", "आप कैसे हैं?"),
    ("", "and then", "en", "and then"),
    ("Hello.", "", "en", ""),
])
def test_the_first_word_takes_the_case_of_its_place_in_the_sentence(previous, text, language, joined):
    assert continue_case(previous, text, language) == joined


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
    assert continuation.join(7, "how are you?", "en") == " How are you?"
    assert continuation.join(8, "how are you?", "en") == "how are you?"  # another window: neither space nor case
    assert continuation.join(0, "how are you?", "en") == "how are you?"  # a window nobody could name

    now = time.monotonic()
    monkeypatch.setattr("app.desktop.input_activity.time.monotonic", lambda: now + LATE_S + 1)
    watched.event(X.KeyPress, 36, 0)  # the user presses Enter
    assert continuation.join(7, "how are you?", "en") == "how are you?"


def test_a_key_right_after_a_pasted_text_counts():
    """A paste keystroke was sent 150 ms before the paste is over: no grace, an Enter at once counts."""
    watched = activity()
    continuation = Continuation(watched)
    continuation.pasting()
    continuation.pasted(window=7, text="Hello Anna.")
    watched.event(X.KeyPress, 36, 0)
    assert continuation.join(7, "How are you?") == "How are you?"


def test_a_paste_that_failed_continues_nothing():
    continuation = Continuation(activity())
    continuation.pasting()
    continuation.pasted(window=7, text=None)
    assert continuation.join(7, "how are you?", "en") == "how are you?"
    assert Continuation(None).join(7, "how are you?", "en") == "how are you?"  # no monitor (Wayland, macOS, Windows)
