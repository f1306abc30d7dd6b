"""Spacing and capitalisation after the other steps have removed and inserted things.

Removing "um," or turning "comma" into "," leaves stray spaces, doubled or leading punctuation and
lower-case sentence starts; this step repairs exactly those and nothing else. It never touches a
word that has a capital inside ("iPhone", "gRPC"), nor an address: a replacement's literal
"ana@example.org" or "https://..." at a sentence start stays as the user wrote it. The first word is
capitalised only when the engine wrote its transcript that way (`capitalise_start`: "Um, so" -> "So"),
so a transcript the engine began in lower case stays so. An ellipsis or the last dot of an abbreviation ("p.m.", "e.g.",
"Mr.", "z. B.": app/text/abbreviations.py) ends no sentence: "thinking... maybe" and "at 5 p.m. tomorrow" stay
as the engine wrote them. French puts a
space before ? ! : ; (typography): that space is kept there and removed elsewhere. Mandarin's marks
are full-width (app/text/fullwidth.py).
"""

from __future__ import annotations

import re

from app.text.abbreviations import ends_with_abbreviation
from app.text.fullwidth import full_width_marks

_CLOSING = {"default": r"[,.;:!?)\]…]", "fr": r"[,.)\]…]"}
# A word to capitalise: not the start of an e-mail or web address ("ana@example.org", "example.org", "https://").
_WORD = r"([^\W\d_][\w'’\-]*)(?![\w'’\-]|[@.]\w|://)"
# A full stop, question or exclamation mark and the space after it: not the dots of "..." or "p.m.".
_SENTENCE_END = r"(?<!\.)(?<!\.\w)[.!?]\s+"


def tidy(text: str, language: str, *, capitalise_start: bool = True) -> str:
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r" *\n *", "\n", text)
    # A mark that starts a word is not closing anything: ".NET", ".env", ".5" keep the space before them.
    text = re.sub(rf" +(?={_CLOSING.get(language, _CLOSING['default'])}(?!\w))", "", text)
    text = re.sub(r"[,;:]+(?=\s*[.!?](?!\w))", "", text)  # "We should, ." after a removed filler
    text = re.sub(r"([,;:])(?:\s*[,;:])+", r"\1", text)  # ", ," after a removed filler
    text = re.sub(r"(?m)^[ ,;:]+", "", text)  # punctuation left at the start of a line
    if language == "zh":
        text = full_width_marks(text)
    if language == "fr":  # "ça va ?": a space before a closing double mark, not inside "https://"
        text = re.sub(r"(?<=\w)([?!:;])(?=\s|$)", r" \1", text)
    text = text.strip()
    starts = rf"(^|{_SENTENCE_END}|\n)" if capitalise_start else rf"({_SENTENCE_END}|\n)"
    return re.sub(starts + _WORD, lambda m: _capitalise(m, language), text, flags=re.DOTALL)


def _capitalise(match: re.Match[str], language: str) -> str:
    word = match.group(2)
    if word != word.lower():  # already capitalised, or "iPhone": leave it as written
        return match.group(0)
    if match.group(1).startswith(".") and ends_with_abbreviation(match.string[:match.start(1)], language):
        return match.group(0)  # "Mr. and Mrs.", "z. B. mehr": the engine's lower case is right
    return match.group(1) + word[0].upper() + word[1:]
