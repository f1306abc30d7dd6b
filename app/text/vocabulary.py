"""Vocabulary correction: a word or run of words that sounds like one of the user's entries becomes it.

"cuber netties" -> "Kubernetes", "postgres QL" -> "PostgreSQL", "win" stays "win". Whisper's prompt
(see the engines) makes the model *likely* to write the entry; this step catches what it still
misses, for every engine. A span is compared with an entry twice, both with rapidfuzz's normalised
Levenshtein ratio (0..100): on its letters (accents and case folded, spaces dropped) and, for
English, on the Metaphone keys of jellyfish (how it sounds). A span replaces only when both are
close, so an ordinary word that merely sounds a bit alike ("cabinets" near "Kubernetes") stays.

Per language: Metaphone is built for English spelling, so English uses sound and spelling; German,
French and Spanish (and an unknown language) use the spelling alone with a stricter threshold;
Hindi and Mandarin are left alone (their scripts have no letters to compare this way, and Mandarin
has no spaces between words). Entries in other scripts are only matched exactly.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise

import jellyfish
from rapidfuzz import fuzz

from app.text.words import Word, fold, is_latin, words

# Thresholds (rapidfuzz ratios, 0..100), tuned on tests/test_text_vocabulary.py's lists of words that
# must change and words that must not.
SOUND_MIN = 84  # English: the Metaphone keys of span and entry
SPELLING_MIN_WITH_SOUND = 70  # English: the letters too, so a same-sounding ordinary word stays
SPELLING_MIN = 86  # other Latin-script languages: letters only
MIN_LETTERS = 4  # shorter spans and entries are never changed fuzzily: too many real words are that close
NO_CORRECTION = ("hi", "zh")
EXTRA_WORDS = 2  # a span may have this many more words than the entry ("post gress Q L" for "PostgreSQL")


@dataclass(frozen=True)
class _Match:
    score: float
    first: int  # index of the span's first word
    last: int  # index of its last word
    entry: str


def correct(text: str, vocabulary: Sequence[str], language: str = "en") -> str:
    """`text` with each span that sounds like a vocabulary entry written as the entry."""
    entries = [e.strip() for e in vocabulary if e and e.strip()]
    if not entries or not text or language in NO_CORRECTION:
        return text
    ws = words(text)
    letters = [fold(w.text) for w in ws]
    # Whether each word and the next belong to one phrase: only spaces apart, or punctuation inside one token
    # ("node.js"). A span never reaches across punctuation before a space or a line break, so "I like red. Is
    # it" does not become "I like Redis it".
    joined = [_joins(text[a.end:b.start]) for a, b in pairwise(ws)]
    phonetic = language in ("en", "auto", "")
    found = [m for entry in entries for m in _matches(ws, letters, joined, entry, phonetic=phonetic)]
    places = {m: _place(text, ws, m) for m in found}
    chosen: list[_Match] = []
    taken: set[int] = set()
    # Best first; on a tie the span with fewer extra words wins.
    for m in sorted((m for m in found if places[m]), key=lambda m: (-m.score, m.last - m.first)):
        span = set(range(m.first, m.last + 1))
        if not span & taken:
            chosen.append(m)
            taken |= span
    for m in sorted(chosen, key=lambda m: m.first, reverse=True):
        start, end = places[m]
        text = text[:start] + m.entry + text[end:]
    return text


def _place(text: str, ws: list[Word], m: _Match) -> tuple[int, int] | None:
    """Where `m.entry` goes: its words, with the marks the entry begins or ends with where the text has them
    already, so "I use .NET" and "C#" do not become "..NET" and "C##". None where a short entry's marks are
    missing: its letters alone are an ordinary word or letter ("a C in maths" is no "C#", "a net" no ".NET")."""
    start, end = ws[m.first].start, ws[m.last].end
    before, after = re.match(r"(\W*).*?(\W*)$", m.entry, re.DOTALL).groups()
    has_before = text[max(0, start - len(before)):start] == before
    has_after = text[end:end + len(after)] == after
    if len(fold(m.entry)) < MIN_LETTERS and not (has_before and has_after):
        return None
    return start - (len(before) if has_before else 0), end + (len(after) if has_after else 0)


def _matches(ws: list[Word], folded: list[str], joined: list[bool], entry: str, *, phonetic: bool) -> list[_Match]:
    """Every span of `ws` (words, `folded` their folded letters, `joined[i]` whether word i and i + 1 are one
    phrase) close enough to `entry`, scored."""
    target = fold(entry)
    if not target:
        return []
    latin = is_latin(entry)
    size = len(words(entry)) or 1
    sound = _metaphone(target) if phonetic and latin else ""
    out = []
    for count in range(max(1, size - 1), size + EXTRA_WORDS + 1):
        for first in range(len(ws) - count + 1):
            if not all(joined[first:first + count - 1]):
                continue
            letters = "".join(folded[first:first + count])
            if letters == target:
                # Same letters: the entry's spelling ("postgresql" -> "PostgreSQL"). An exact occurrence is
                # matched too, so its words are taken before a fuzzy span around them ("on Kubernetes").
                out.append(_Match(200.0 - count, first, first + count - 1, entry))
                continue
            score = _similarity(letters, target, sound, latin=latin)
            # A longer span starting with a one-letter word ("a sensible") takes a word of the sentence;
            # one-letter words inside or at the end are spelled letters ("postgres Q L").
            extra_short = count > size and len(folded[first]) < 2
            if score is not None and not extra_short:
                out.append(_Match(score, first, first + count - 1, entry))
    return out


def _similarity(letters: str, target: str, sound: str, *, latin: bool) -> float | None:
    """How alike a span and an entry are (0..100), or None when too far apart to replace."""
    if abs(len(letters) - len(target)) > max(2, len(target) // 4):  # "in a sensible" is not "Ansible"
        return None
    if not latin or len(letters) < MIN_LETTERS or len(target) < MIN_LETTERS or not is_latin(letters):
        return None
    spelling = fuzz.ratio(letters, target)
    if sound:
        heard = fuzz.ratio(_metaphone(letters), sound)
        if heard >= SOUND_MIN and spelling >= SPELLING_MIN_WITH_SOUND:
            return (heard + spelling) / 2
        return None
    return spelling if spelling >= SPELLING_MIN else None


def _joins(gap: str) -> bool:
    """Whether the text between two words keeps them in one phrase: spaces alone, or no space at all."""
    return gap.strip(" \t") == "" or not any(c.isspace() for c in gap)


@lru_cache(maxsize=8192)
def _metaphone(letters: str) -> str:
    """Metaphone key, cached: each span of a transcript is compared with every entry."""
    return jellyfish.metaphone(letters)
