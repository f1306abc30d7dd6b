"""English sentences for the micro model, cut from Debian's `fortunes` packages.

The fortune files are quotes, jokes and literature: varied wording, public and offline. We keep
sentences that espeak-ng reads exactly as written (letters and plain punctuation, no digits or
abbreviations), so the text is a true transcript of the speech made from it.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

FORTUNE_DIRS = (Path("/usr/share/games/fortunes"),)
# Offensive and non-prose collections are left out.
SKIP_FILES = {"off", "art", "ascii-art", "definitions", "linuxcookie", "debian", "perl", "startrek", "zippy"}
MIN_WORDS, MAX_WORDS = 4, 14
_ALLOWED = re.compile(r"^[A-Z][A-Za-z' ,]*[a-z][.?!]$")
_SENTENCE_END = re.compile(r"(?<=[.?!])\s+(?=[A-Z])")
_ALL_CAPS = re.compile(r"\b[A-Z]{2,}\b")


class CorpusError(RuntimeError):
    """The text source is missing; the message says what to install."""


def fortune_files() -> list[Path]:
    files = sorted(
        p
        for folder in FORTUNE_DIRS
        if folder.is_dir()
        for p in folder.iterdir()
        if p.is_file() and not p.suffix and p.name not in SKIP_FILES
    )
    if not files:
        raise CorpusError(
            "No fortune files found in /usr/share/games/fortunes; install Debian's `fortunes` and "
            "`fortunes-min` packages (sudo apt-get install fortunes fortunes-min)."
        )
    return files


def sentences(files: list[Path] | None = None) -> list[str]:
    """Unique, speakable sentences in a stable order (sorted by content hash, not by file)."""
    seen: dict[str, None] = {}
    for path in files or fortune_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for fortune in text.split("\n%\n"):
            # Attributions ("-- Mark Twain") and indented verse are not running prose.
            lines = [line.strip() for line in fortune.splitlines() if line.strip() and not line.lstrip().startswith("--")]
            for sentence in _SENTENCE_END.split(" ".join(lines)):
                sentence = " ".join(sentence.split())
                if _speakable(sentence):
                    seen.setdefault(sentence, None)
    return sorted(seen, key=lambda s: hashlib.sha256(s.encode()).hexdigest())


def _speakable(sentence: str) -> bool:
    words = sentence.split()
    if not MIN_WORDS <= len(words) <= MAX_WORDS or not _ALLOWED.match(sentence):
        return False
    if _ALL_CAPS.search(sentence) or "''" in sentence or " '" in sentence or "' " in sentence:
        return False
    return all(len(w.strip(",.?!")) > 0 for w in words)


def split(all_sentences: list[str], heldout: int) -> tuple[list[str], list[str]]:
    """(train, held out): the held-out sentences are never synthesised for training."""
    return all_sentences[heldout:], all_sentences[:heldout]
