"""Word spans of a transcript, shared by the steps that match words (vocabulary, replacements, fillers)."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# A word: letters, digits and inner apostrophes or hyphens ("don't", "e-mail"); Unicode-aware.
WORD = re.compile(r"[^\W_]+(?:['’\-][^\W_]+)*")
# Han and kana, as a regex character-class body: scripts written without spaces between words.
UNSPACED_SCRIPTS = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"


@dataclass(frozen=True)
class Word:
    text: str
    start: int
    end: int


def words(text: str) -> list[Word]:
    return [Word(m.group(), m.start(), m.end()) for m in WORD.finditer(text)]


def fold(text: str) -> str:
    """Lower case without accents or anything but letters and digits: "Café-Bar" -> "cafebar"."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if c.isalnum() and not unicodedata.combining(c))


def is_latin(text: str) -> bool:
    """Whether every letter of `text` is Latin script (the phonetic and spelling keys only work for it)."""
    return all("LATIN" in unicodedata.name(c, "") for c in text if c.isalpha())
