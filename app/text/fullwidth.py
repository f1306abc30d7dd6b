"""Mandarin punctuation in its full-width forms: "你好,我们走吧?" -> "你好，我们走吧？".

Whisper often writes ASCII marks inside Chinese text, even mixed with full-width ones in one
transcript ("建建其恒毫,我们是外面之物犯法。" from Whisper base), and a Chinese reader sees the
half-width comma and question mark as wrong. A mark is converted only where it touches a Han
character, so "3.5", "Node.js" and a Latin phrase's own punctuation ("OK, go") stay as written; a
space after a converted mark goes, since the full-width mark carries its own space.
"""

from __future__ import annotations

import re

from app.text.words import UNSPACED_SCRIPTS

FULL_WIDTH = {",": "，", ".": "。", "?": "？", "!": "！", ":": "：", ";": "；"}
_HAN = f"[{UNSPACED_SCRIPTS}]"
# Marks right after a Han character ("吗?!"; a dot only alone, not an ellipsis's), or right before one (not a
# dot: "e.g.中文" is rare, "Node.js" common); the spaces after them.
_MARK = re.compile(rf"(?<={_HAN})([,?!:;]+|\.(?!\.))[ \t]*|([,?!:;]+)[ \t]*(?={_HAN})")


def full_width_marks(text: str) -> str:
    """`text` with the ASCII , . ? ! : ; that touch a Han character in their full-width forms."""
    return _MARK.sub(lambda m: "".join(FULL_WIDTH[c] for c in m.group(1) or m.group(2)), text)
