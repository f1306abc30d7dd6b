"""Replacements: the user's spoken -> written pairs ("at sign" -> "@", "my email" -> an address).

Whole words only, case-insensitive, applied in the order the user listed them, so a later pair can
build on an earlier one. Mandarin (and Japanese) is written without spaces, so a phrase's Han or kana
end needs no word boundary ("微信" in "我用微信发给你"), and a Han or kana neighbour is one for a Latin
phrase ("用Python写"). A combining mark is part of its word: "है" does not match inside "हैं". The pairs come from settings.json, where a hand edit can break them:
`check_replacements` names the broken entry instead of dropping it, and the settings form shows that
sentence beside the table; an entirely empty entry is skipped, but counted, so the number is the table's row.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Any

from app.errors import UserError
from app.text.words import UNSPACED_SCRIPTS

Pair = tuple[str, str]
# Combining marks (Devanagari's vowel signs, accents written apart): Python's \w does not count them.
_MARKS = "".join(chr(c) for c in range(0x300, 0x10000) if unicodedata.category(chr(c)).startswith("M"))
# What makes a neighbour part of the same word: a letter, digit or mark, other than Han or kana.
_WORD_BEFORE = rf"(?<![^\W{UNSPACED_SCRIPTS}])(?<![{_MARKS}])"
_WORD_AFTER = rf"(?![^\W{UNSPACED_SCRIPTS}])(?![{_MARKS}])"


def apply_replacements(text: str, pairs: Sequence[Pair]) -> str:
    for spoken, written in pairs:
        text = _pattern(spoken).sub(lambda _m, w=written: w, text)
    return text


def _pattern(spoken: str) -> re.Pattern[str]:
    """`spoken` as whole words, any run of spaces between them, any case."""
    body = r"\s+".join(re.escape(part) for part in spoken.split())
    before = "" if _unspaced(spoken[0]) else _WORD_BEFORE
    after = "" if _unspaced(spoken[-1]) else _WORD_AFTER
    return re.compile(before + body + after, re.IGNORECASE)


def _unspaced(char: str) -> bool:
    return re.match(f"[{UNSPACED_SCRIPTS}]", char) is not None


def check_replacements(value: Any) -> tuple[Pair, ...]:
    """The pairs as a tuple of (spoken, written), or a UserError naming the first malformed entry."""
    if not isinstance(value, (list, tuple)):
        raise UserError("Replacements must be a list of [spoken, written] pairs.", code="bad_setting")
    pairs = []
    for number, item in enumerate(value, 1):
        if (not isinstance(item, (list, tuple)) or len(item) != 2
                or not all(isinstance(part, str) for part in item)):
            raise UserError(f"Replacement {number} must be a pair of texts [spoken, written], not {item!r}; "
                            "fix or delete that row.", code="bad_setting")
        spoken, written = item[0].strip(), item[1]
        if not spoken and not written.strip():  # an empty row of the settings' table: nothing to replace
            continue
        if not re.search(r"\w", spoken):
            raise UserError(f"Replacement {number} has no spoken words (the left column); type what you say, "
                            "or delete that row.", code="bad_setting")
        pairs.append((" ".join(spoken.split()), written))
    return tuple(pairs)
