"""Two dictations in a row read as one text: a space between them, and the second one's first word in case.

Dictating "Hello Anna." and then "How are you?" must give "Hello Anna. How are you?", not
"Hello Anna.How are you?"; yet a space in front of a dictation at the start of a line, in an empty
field or after a word the user typed with its own space is a stray character. Only where nothing can
have moved the cursor since our last paste (same window, no key or click: `input_activity.py`) does
the text get a space in front, and only where the two texts meet as words of a spaced script do.
There, and only there, the app also knows the sentence the new text goes on, so its first word takes
the case that wants ("and I'm great." after "Start without me." is "And I'm great.":
app/text/sentence_case.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from app.desktop.input_activity import LATE_S, InputActivity
from app.text.sentence_case import continue_case
from app.text.words import UNSPACED_SCRIPTS

# Scripts written without spaces between words (Han, kana), and their punctuation ("。", "，").
_UNSPACED = re.compile(f"[{UNSPACED_SCRIPTS}\u3000-\u303f\uff00-\uffef]")
# What may not follow a space: closing marks, and what already is a space or a line break.
_NO_SPACE_BEFORE = re.compile(r"[\s,.;:!?)\]}»”’…%।]")
# What may not be followed by a space: opening marks, and a space or line break already there.
_NO_SPACE_AFTER = re.compile(r"[\s(\[{«“‘¿¡/@#-]")


def joining_space(previous: str, text: str) -> str:
    """" " where `text`, pasted right after `previous`, begins a new word of a spaced script; else ""."""
    if not previous or not text:
        return ""
    last, first = previous[-1], text[0]
    if _NO_SPACE_AFTER.match(last) or _NO_SPACE_BEFORE.match(first):
        return ""
    if _UNSPACED.match(last) or _UNSPACED.match(first):
        return ""
    return " "


@dataclass
class _Pasted:
    window: int
    text: str
    inputs: int  # the activity count when the paste was done


class Continuation:
    """Remembers the last paste; `join` makes the next text go on from it where it continues it."""

    def __init__(self, activity: InputActivity | None) -> None:
        self.activity = activity
        self._last: _Pasted | None = None

    def join(self, window: int, text: str, language: str = "") -> str:
        """`text` as it goes into `window` (0: unknown window): where it continues the last paste, with the space
        in front and the first word's case that the sentence wants (`language`: the text's, for its word lists)."""
        last = self._last
        if self.activity is None or last is None or not window or window != last.window:
            return text
        if self.activity.count != last.inputs:
            return text  # a key or click since: the cursor may be anywhere
        return joining_space(last.text, text) + continue_case(last.text, text, language)

    def pasting(self) -> None:
        """Our paste starts: its keys are not the user's."""
        if self.activity is not None:
            self.activity.mute(True)

    def pasted(self, window: int, text: str | None, *, typed: bool = False) -> None:
        """Our paste is over: `text` went into `window` (None: nothing, or not where we know); `typed` when it
        was typed key by key, whose last keys may still be on their way to the monitor."""
        if self.activity is None:
            return
        self.activity.mute(False, grace_s=LATE_S if typed else 0.0)
        self._last = _Pasted(window, text, self.activity.count) if text and window else None
